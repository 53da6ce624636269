//! A cluster CIDR cut into equal node CIDRs, with a bitmap of the ones in use (upstream `CidrSet`,
//! kubernetes/kubernetes pkg/controller/nodeipam/ipam/cidrset/cidr_set.go).
//!
//! Allocation walks round-robin from just after the last CIDR handed out, so a CIDR freed by a
//! deleted node is not handed out again at once while others are free.

use std::net::IpAddr;

use ipnet::IpNet;

/// An IPv6 node mask may be at most this many bits longer than the cluster mask (upstream
/// `clusterSubnetMaxDiff`).
const CLUSTER_SUBNET_MAX_DIFF: u8 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrSetError {
    #[error(
        "CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range"
    )]
    NoCidrsRemaining,
    #[error("New CIDR set failed; the node CIDR size is too big")]
    SubNetTooBig,
    #[error("cidr {cidr} is out the range of cluster cidr {cluster}")]
    OutOfRange { cidr: IpNet, cluster: IpNet },
    #[error("CIDR: {ip}/{mask} is out of the range of CIDR allocator")]
    IpOutOfRange { ip: IpAddr, mask: u8 },
    #[error("node mask size {node} is shorter than the cluster mask size {cluster}")]
    NodeMaskShorterThanCluster { node: u8, cluster: u8 },
    #[error("{cidr} is not of the cluster CIDR's IP family")]
    Family { cidr: IpNet },
}

/// What an allocation or release did, for the `node_ipam_controller_cidrset_*` metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    pub cidr: IpNet,
    /// How many used CIDRs were skipped before a free one (upstream's tries per request).
    pub tries: u64,
}

#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: IpNet,
    node_mask: u8,
    max_cidrs: u64,
    allocated: u64,
    next_candidate: u64,
    /// One bit per node CIDR, grown as higher CIDRs are used.
    used: Vec<u64>,
}

fn bits(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => 32,
        IpNet::V6(_) => 128,
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

impl CidrSet {
    /// `NewCIDRSet`: node CIDRs of `node_mask` bits out of `cluster` (its host bits ignored).
    pub fn new(cluster: IpNet, node_mask: u8) -> Result<Self, CidrSetError> {
        let cluster = cluster.trunc();
        let cluster_mask = cluster.prefix_len();
        if node_mask < cluster_mask || node_mask > bits(&cluster) {
            return Err(CidrSetError::NodeMaskShorterThanCluster {
                node: node_mask,
                cluster: cluster_mask,
            });
        }
        if matches!(cluster, IpNet::V6(_)) && node_mask - cluster_mask > CLUSTER_SUBNET_MAX_DIFF {
            return Err(CidrSetError::SubNetTooBig);
        }
        let diff = u32::from(node_mask - cluster_mask);
        let max_cidrs = 1u64.checked_shl(diff).unwrap_or(u64::MAX);
        Ok(CidrSet {
            cluster,
            node_mask,
            max_cidrs,
            allocated: 0,
            next_candidate: 0,
            used: Vec::new(),
        })
    }

    pub fn cluster(&self) -> IpNet {
        self.cluster
    }

    pub fn max_cidrs(&self) -> u64 {
        self.max_cidrs
    }

    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The share of node CIDRs in use (upstream `cidrset_usage_cidrs`).
    pub fn usage(&self) -> f64 {
        self.allocated as f64 / self.max_cidrs as f64
    }

    fn bit(&self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        self.used.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    fn set_bit(&mut self, i: u64, on: bool) {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.used.len() {
            if !on {
                return;
            }
            self.used.resize(word + 1, 0);
        }
        if on {
            self.used[word] |= 1 << bit;
        } else {
            self.used[word] &= !(1 << bit);
        }
    }

    /// `indexToCIDRBlock`.
    fn block(&self, index: u64) -> IpNet {
        let shift = u32::from(bits(&self.cluster) - self.node_mask);
        let offset = u128::from(index).checked_shl(shift).unwrap_or(0);
        let base = to_u128(self.cluster.network()) | offset;
        match self.cluster {
            IpNet::V4(_) => IpNet::new(
                IpAddr::V4(std::net::Ipv4Addr::from(base as u32)),
                self.node_mask,
            ),
            IpNet::V6(_) => IpNet::new(IpAddr::V6(std::net::Ipv6Addr::from(base)), self.node_mask),
        }
        .unwrap_or(self.cluster)
    }

    /// `AllocateNext`: the next free node CIDR.
    pub fn allocate_next(&mut self) -> Result<Allocated, CidrSetError> {
        if self.allocated == self.max_cidrs {
            return Err(CidrSetError::NoCidrsRemaining);
        }
        let mut candidate = self.next_candidate;
        let mut tries = 0;
        while tries < self.max_cidrs {
            if !self.bit(candidate) {
                break;
            }
            candidate = (candidate + 1) % self.max_cidrs;
            tries += 1;
        }
        self.next_candidate = (candidate + 1) % self.max_cidrs;
        self.set_bit(candidate, true);
        self.allocated += 1;
        Ok(Allocated {
            cidr: self.block(candidate),
            tries,
        })
    }

    /// `getIndexForIP`.
    fn index_for(&self, ip: IpAddr) -> Result<u64, CidrSetError> {
        let shift = u32::from(bits(&self.cluster) - self.node_mask);
        let index = (to_u128(self.cluster.network()) ^ to_u128(ip))
            .checked_shr(shift)
            .unwrap_or(0);
        match u64::try_from(index) {
            Ok(i) if i < self.max_cidrs => Ok(i),
            _ => Err(CidrSetError::IpOutOfRange {
                ip,
                mask: self.node_mask,
            }),
        }
    }

    /// `getBeginningAndEndIndices`: the node CIDRs `cidr` covers (all of them for a CIDR that
    /// covers the whole cluster CIDR).
    fn indices(&self, cidr: &IpNet) -> Result<(u64, u64), CidrSetError> {
        if !same_family(cidr, &self.cluster) {
            return Err(CidrSetError::Family { cidr: *cidr });
        }
        let cidr = cidr.trunc();
        if !self.cluster.contains(&cidr.network()) && !cidr.contains(&self.cluster.network()) {
            return Err(CidrSetError::OutOfRange {
                cidr,
                cluster: self.cluster,
            });
        }
        if self.cluster.prefix_len() >= cidr.prefix_len() {
            return Ok((0, self.max_cidrs - 1));
        }
        let node_net = |ip: IpAddr| {
            IpNet::new(ip, self.node_mask)
                .map(|n| n.network())
                .unwrap_or(ip)
        };
        let begin = self.index_for(node_net(cidr.network()))?;
        let end = self.index_for(node_net(cidr.broadcast()))?;
        Ok((begin, end))
    }

    /// `Occupy`: marks every node CIDR `cidr` covers as used. Returns how many were newly used.
    pub fn occupy(&mut self, cidr: &IpNet) -> Result<u64, CidrSetError> {
        let (begin, end) = self.indices(cidr)?;
        let mut newly = 0;
        for i in begin..=end {
            if !self.bit(i) {
                self.set_bit(i, true);
                self.allocated += 1;
                newly += 1;
            }
        }
        Ok(newly)
    }

    /// `Release`: frees every node CIDR `cidr` covers. Returns how many were freed.
    pub fn release(&mut self, cidr: &IpNet) -> Result<u64, CidrSetError> {
        let (begin, end) = self.indices(cidr)?;
        let mut freed = 0;
        for i in begin..=end {
            if self.bit(i) {
                self.set_bit(i, false);
                self.allocated -= 1;
                freed += 1;
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }

    fn all(set: &mut CidrSet) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(a) = set.allocate_next() {
            out.push(a.cidr.to_string());
        }
        out
    }

    #[test]
    fn ipv4_node_cidrs_are_handed_out_in_order_until_none_remain() {
        let mut set = CidrSet::new(net("127.123.234.0/28"), 30).expect("set");
        assert_eq!(set.max_cidrs(), 4);
        assert_eq!(
            all(&mut set),
            [
                "127.123.234.0/30",
                "127.123.234.4/30",
                "127.123.234.8/30",
                "127.123.234.12/30"
            ]
        );
        assert_eq!(set.allocate_next(), Err(CidrSetError::NoCidrsRemaining));
        assert_eq!(set.usage(), 1.0);
    }

    #[test]
    fn ipv6_node_cidrs_and_the_subnet_size_limit() {
        let mut set = CidrSet::new(net("beef:1234::/30"), 32).expect("set");
        assert_eq!(
            all(&mut set),
            [
                "beef:1234::/32",
                "beef:1235::/32",
                "beef:1236::/32",
                "beef:1237::/32"
            ]
        );
        let mut wide = CidrSet::new(net("2001:db8::/48"), 64).expect("set");
        assert_eq!(
            wide.allocate_next().map(|a| a.cidr.to_string()),
            Ok("2001:db8::/64".into())
        );
        assert_eq!(
            wide.allocate_next().map(|a| a.cidr.to_string()),
            Ok("2001:db8:0:1::/64".into())
        );
        assert_eq!(
            CidrSet::new(net("2001:db8::/48"), 65).err(),
            Some(CidrSetError::SubNetTooBig)
        );
    }

    #[test]
    fn a_released_cidr_is_handed_out_again_only_after_the_others() {
        let mut set = CidrSet::new(net("10.0.0.0/24"), 26).expect("set");
        let first = set.allocate_next().expect("first").cidr;
        let second = set.allocate_next().expect("second").cidr;
        assert_eq!(set.release(&first), Ok(1));
        assert_eq!(
            set.allocate_next().map(|a| a.cidr),
            Ok(net("10.0.0.128/26"))
        );
        assert_eq!(
            set.allocate_next().map(|a| a.cidr),
            Ok(net("10.0.0.192/26"))
        );
        // Wrapped around: the freed one, after skipping none.
        let again = set.allocate_next().expect("again");
        assert_eq!(again.cidr, first);
        assert_eq!(again.tries, 0);
        assert_ne!(second, first);
        assert_eq!(set.allocate_next(), Err(CidrSetError::NoCidrsRemaining));
    }

    #[test]
    fn occupying_a_service_range_inside_the_cluster_cidr_takes_every_block_it_covers() {
        let mut set = CidrSet::new(net("10.0.0.0/16"), 24).expect("set");
        assert_eq!(set.occupy(&net("10.0.0.0/22")), Ok(4));
        assert_eq!(set.occupy(&net("10.0.1.0/24")), Ok(0), "already taken");
        assert_eq!(set.allocate_next().map(|a| a.cidr), Ok(net("10.0.4.0/24")));
        // A range covering the whole cluster CIDR takes everything.
        let mut small = CidrSet::new(net("10.1.0.0/24"), 26).expect("set");
        assert_eq!(small.occupy(&net("10.0.0.0/8")), Ok(4));
        assert_eq!(small.allocate_next(), Err(CidrSetError::NoCidrsRemaining));
    }

    #[test]
    fn cidrs_outside_the_cluster_cidr_or_of_the_other_family_are_refused() {
        let mut set = CidrSet::new(net("10.0.0.0/16"), 24).expect("set");
        assert!(matches!(
            set.occupy(&net("10.1.0.0/24")),
            Err(CidrSetError::OutOfRange { .. })
        ));
        assert!(matches!(
            set.release(&net("fd00::/64")),
            Err(CidrSetError::Family { .. })
        ));
        assert!(matches!(
            CidrSet::new(net("10.0.0.0/16"), 8),
            Err(CidrSetError::NodeMaskShorterThanCluster { .. })
        ));
    }

    #[test]
    fn a_cluster_cidr_with_host_bits_counts_from_its_network() {
        let mut set = CidrSet::new(net("10.0.0.77/24"), 26).expect("set");
        assert_eq!(set.cluster(), net("10.0.0.0/24"));
        assert_eq!(set.allocate_next().map(|a| a.cidr), Ok(net("10.0.0.0/26")));
    }
}
