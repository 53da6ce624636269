//! The node-ipam flags and their validation (upstream cmd/kube-controller-manager/app/core.go
//! `newNodeIpamController`, `validateCIDRs`, `setNodeCIDRMaskSizes`, and the options'
//! `--service-cluster-ip-range` check).

use ipnet::IpNet;

/// `--node-cidr-mask-size` defaults.
pub const DEFAULT_NODE_MASK_IPV4: u8 = 24;
pub const DEFAULT_NODE_MASK_IPV6: u8 = 64;

/// The flags as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeIpamFlags {
    /// `--allocate-node-cidrs`
    pub allocate_node_cidrs: bool,
    /// `--cidr-allocator-type` (upstream default `RangeAllocator`).
    pub cidr_allocator_type: String,
    /// `--cluster-cidr`: one CIDR, or two of different families.
    pub cluster_cidr: Option<String>,
    /// `--service-cluster-ip-range`: one CIDR, or two.
    pub service_cluster_ip_range: Option<String>,
    /// `--node-cidr-mask-size`, `--node-cidr-mask-size-ipv4`, `--node-cidr-mask-size-ipv6` (0:
    /// unset).
    pub node_cidr_mask_size: i32,
    pub node_cidr_mask_size_ipv4: i32,
    pub node_cidr_mask_size_ipv6: i32,
}

/// What the range allocator works with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIpamConfig {
    pub cluster_cidrs: Vec<IpNet>,
    /// The node mask size for each cluster CIDR.
    pub node_mask_sizes: Vec<u8>,
    pub service_cidrs: Vec<IpNet>,
}

fn is_v6(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(_))
}

/// `netutils.ParseCIDRs` over a comma-separated list: each CIDR's network.
fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, String> {
    list.trim()
        .split(',')
        .map(|c| {
            c.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| format!("invalid CIDR address: {c}"))
        })
        .collect()
}

fn mask(value: i32, flag: &str, max: u8) -> Result<u8, String> {
    u8::try_from(value)
        .ok()
        .filter(|m| *m <= max)
        .ok_or_else(|| format!("{flag}: {value} is not a valid mask size"))
}

impl NodeIpamFlags {
    /// The options' own validation, whether or not the controller runs.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(range) = &self.service_cluster_ip_range
            && range.split(',').count() > 2
        {
            return Err("--service-cluster-ip-range can not contain more than two entries".into());
        }
        Ok(())
    }

    /// The allocator's configuration, or None when `--allocate-node-cidrs` is off (the
    /// controller then does not run). Errors are what upstream refuses to start with.
    pub fn config(&self) -> Result<Option<NodeIpamConfig>, String> {
        self.validate()?;
        if !self.allocate_node_cidrs {
            return Ok(None);
        }
        match self.cidr_allocator_type.as_str() {
            "" | "RangeAllocator" => {}
            "CloudAllocator" => {
                return Err("--cidr-allocator-type is set to 'CloudAllocator' but cloud provider is not configured".into());
            }
            other => return Err(format!("invalid CIDR allocator type: {other}")),
        }
        let cluster = self.cluster_cidr.as_deref().unwrap_or_default();
        if cluster.trim().is_empty() {
            return Err(
                "Controller: Must specify --cluster-cidr if --allocate-node-cidrs is set".into(),
            );
        }
        let cluster_cidrs = parse_cidrs(cluster).map_err(|e| format!("--cluster-cidr: {e}"))?;
        let dual_stack =
            cluster_cidrs.len() == 2 && is_v6(&cluster_cidrs[0]) != is_v6(&cluster_cidrs[1]);
        if cluster_cidrs.len() > 1 && !dual_stack && cluster_cidrs.len() <= 2 {
            return Err(format!(
                "len of ClusterCIDRs=={} and they are not configured as dual stack (at least one from each IPFamily",
                cluster_cidrs.len()
            ));
        }
        if cluster_cidrs.len() > 2 {
            return Err(format!(
                "length of clusterCIDRs is:{} more than max allowed of 2",
                cluster_cidrs.len()
            ));
        }

        let mut service_cidrs = Vec::new();
        if let Some(range) = self.service_cluster_ip_range.as_deref() {
            // Upstream only warns about a service CIDR it cannot parse, and goes on without it.
            for entry in range.split(',').filter(|e| !e.trim().is_empty()) {
                match entry.trim().parse::<IpNet>() {
                    Ok(n) => service_cidrs.push(n.trunc()),
                    Err(_) => tracing::warn!(cidr = entry, "unsuccessful parsing of service CIDR"),
                }
            }
            if service_cidrs.len() == 2 && is_v6(&service_cidrs[0]) == is_v6(&service_cidrs[1]) {
                return Err("serviceCIDR and secondaryServiceCIDR are not dualstack (from different IPfamiles)".into());
            }
        }

        let node_mask_sizes = self.mask_sizes(&cluster_cidrs)?;
        for (cidr, node_mask) in cluster_cidrs.iter().zip(&node_mask_sizes) {
            if cidr.prefix_len() > *node_mask {
                return Err("Controller: Invalid --cluster-cidr, mask size of cluster CIDR must be less than or equal to --node-cidr-mask-size configured for CIDR family".into());
            }
            // Upstream finds this when it builds the CIDR set, at start-up.
            super::cidr_set::CidrSet::new(*cidr, *node_mask).map_err(|e| e.to_string())?;
        }
        Ok(Some(NodeIpamConfig {
            cluster_cidrs,
            node_mask_sizes,
            service_cidrs,
        }))
    }

    /// `setNodeCIDRMaskSizes`.
    fn mask_sizes(&self, cluster_cidrs: &[IpNet]) -> Result<Vec<u8>, String> {
        let sized = |v4: u8, v6: u8| -> Vec<u8> {
            cluster_cidrs
                .iter()
                .map(|c| if is_v6(c) { v6 } else { v4 })
                .collect()
        };
        let (mut v4, mut v6) = (DEFAULT_NODE_MASK_IPV4, DEFAULT_NODE_MASK_IPV6);
        let any = self.node_cidr_mask_size != 0;
        let any_v4 = self.node_cidr_mask_size_ipv4 != 0;
        let any_v6 = self.node_cidr_mask_size_ipv6 != 0;
        if cluster_cidrs.len() > 1 {
            if any {
                return Err(
                    "usage of --node-cidr-mask-size is not allowed with dual-stack clusters".into(),
                );
            }
            if any_v4 {
                v4 = mask(
                    self.node_cidr_mask_size_ipv4,
                    "--node-cidr-mask-size-ipv4",
                    32,
                )?;
            }
            if any_v6 {
                v6 = mask(
                    self.node_cidr_mask_size_ipv6,
                    "--node-cidr-mask-size-ipv6",
                    128,
                )?;
            }
            return Ok(sized(v4, v6));
        }
        let single_v6 = cluster_cidrs.first().is_some_and(is_v6);
        if any {
            if any_v4 || any_v6 {
                return Err("usage of --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is not allowed if --node-cidr-mask-size is set. For dual-stack clusters please unset it and use IPFamily specific flags".into());
            }
            let m = mask(
                self.node_cidr_mask_size,
                "--node-cidr-mask-size",
                if single_v6 { 128 } else { 32 },
            )?;
            return Ok(sized(m, m));
        }
        if any_v4 {
            if single_v6 {
                return Err("usage of --node-cidr-mask-size-ipv4 is not allowed for a single-stack IPv6 cluster".into());
            }
            v4 = mask(
                self.node_cidr_mask_size_ipv4,
                "--node-cidr-mask-size-ipv4",
                32,
            )?;
        }
        if any_v6 {
            if !single_v6 {
                return Err("usage of --node-cidr-mask-size-ipv6 is not allowed for a single-stack IPv4 cluster".into());
            }
            v6 = mask(
                self.node_cidr_mask_size_ipv6,
                "--node-cidr-mask-size-ipv6",
                128,
            )?;
        }
        Ok(sized(v4, v6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(cluster: &str) -> NodeIpamFlags {
        NodeIpamFlags {
            allocate_node_cidrs: true,
            cidr_allocator_type: "RangeAllocator".into(),
            cluster_cidr: Some(cluster.into()),
            ..NodeIpamFlags::default()
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }

    #[test]
    fn without_allocate_node_cidrs_the_controller_does_not_run() {
        let f = NodeIpamFlags {
            cluster_cidr: Some("garbage".into()),
            ..NodeIpamFlags::default()
        };
        assert_eq!(f.config(), Ok(None));
    }

    #[test]
    fn single_stack_defaults_to_24_and_64() {
        let c = flags("10.244.0.0/16").config().expect("ok").expect("runs");
        assert_eq!(c.cluster_cidrs, vec![net("10.244.0.0/16")]);
        assert_eq!(c.node_mask_sizes, vec![24]);
        let c6 = flags("fd00::/48").config().expect("ok").expect("runs");
        assert_eq!(c6.node_mask_sizes, vec![64]);
    }

    #[test]
    fn dual_stack_takes_the_per_family_masks_and_refuses_the_plain_one() {
        let mut f = flags("10.244.0.0/16,fd00::/48");
        f.node_cidr_mask_size_ipv6 = 60;
        let c = f.config().expect("ok").expect("runs");
        assert_eq!(c.node_mask_sizes, vec![24, 60]);
        f.node_cidr_mask_size = 24;
        assert!(f.config().is_err());
        assert!(
            flags("10.0.0.0/16,10.1.0.0/16").config().is_err(),
            "same family"
        );
        assert!(flags("10.0.0.0/16,fd00::/48,10.1.0.0/16").config().is_err());
    }

    #[test]
    fn mask_flags_must_fit_the_cluster() {
        let mut f = flags("10.244.0.0/16");
        f.node_cidr_mask_size = 26;
        assert_eq!(
            f.config().expect("ok").expect("runs").node_mask_sizes,
            vec![26]
        );
        f.node_cidr_mask_size = 8;
        assert!(
            f.config()
                .expect_err("too short")
                .contains("--node-cidr-mask-size")
        );
        let mut too_many = flags("fd00::/48");
        too_many.node_cidr_mask_size_ipv6 = 120;
        assert!(
            too_many
                .config()
                .expect_err("2^72 CIDRs")
                .contains("too big")
        );
        let mut v6only = flags("10.244.0.0/16");
        v6only.node_cidr_mask_size_ipv6 = 64;
        assert!(v6only.config().is_err());
        let mut both = flags("10.244.0.0/16");
        both.node_cidr_mask_size = 24;
        both.node_cidr_mask_size_ipv4 = 24;
        assert!(both.config().is_err());
    }

    #[test]
    fn missing_or_bad_cluster_cidrs_and_other_allocators_are_refused() {
        let mut f = flags("");
        f.cluster_cidr = None;
        assert!(f.config().expect_err("missing").contains("--cluster-cidr"));
        assert!(flags("10.0.0.0/33").config().is_err());
        let mut cloud = flags("10.0.0.0/16");
        cloud.cidr_allocator_type = "CloudAllocator".into();
        assert!(cloud.config().is_err());
        let mut other = flags("10.0.0.0/16");
        other.cidr_allocator_type = "IPAMFromCluster".into();
        assert!(other.config().is_err());
    }

    #[test]
    fn service_ranges_are_kept_unless_unparsable_and_at_most_two() {
        let mut f = flags("10.0.0.0/8");
        f.service_cluster_ip_range = Some("10.96.0.0/12".into());
        assert_eq!(
            f.config().expect("ok").expect("runs").service_cidrs,
            vec![net("10.96.0.0/12")]
        );
        f.service_cluster_ip_range = Some("nonsense".into());
        assert!(
            f.config()
                .expect("ok")
                .expect("runs")
                .service_cidrs
                .is_empty()
        );
        f.service_cluster_ip_range = Some("10.96.0.0/12,fd00::/108,10.1.0.0/16".into());
        assert!(f.validate().is_err());
        f.service_cluster_ip_range = Some("10.96.0.0/12,10.1.0.0/16".into());
        assert!(f.config().is_err(), "two of one family");
    }
}
