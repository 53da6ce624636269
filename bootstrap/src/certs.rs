//! The cluster's certificates, keys and kubeconfigs in kubeadm's file layout (kubeadm writes
//! them under /etc/kubernetes; here they live under the node's state directory):
//!
//! ```text
//! pki/ca.{crt,key}                          cluster CA
//! pki/apiserver.{crt,key}                   apiserver serving certificate
//! pki/apiserver-kubelet-client.{crt,key}    apiserver → kubelet client
//! pki/apiserver-etcd-client.{crt,key}       apiserver → etcd client
//! pki/front-proxy-ca.{crt,key}              request-header (aggregation) CA
//! pki/front-proxy-client.{crt,key}          apiserver → aggregated apiservers
//! pki/sa.{key,pub}                          service-account token signing key
//! pki/etcd/ca.{crt,key}                     etcd CA
//! pki/etcd/server.{crt,key}                 etcd serving certificate
//! pki/etcd/peer.{crt,key}                   etcd peer certificate
//! pki/etcd/healthcheck-client.{crt,key}     etcd health-check client
//! admin.conf, super-admin.conf, controller-manager.conf, scheduler.conf, kubelet.conf
//! ```
//!
//! Subjects, SANs and usages follow kubeadm (kubernetes/kubernetes
//! cmd/kubeadm/app/phases/certs/certlist.go and phases/kubeconfig): admin.conf is in the group
//! `kubeadm:cluster-admins` (bound to cluster-admin once the apiserver runs), super-admin.conf in
//! `system:masters`.

use std::net::IpAddr;

use crate::kubeconfig::{self, Credentials};
use crate::pki::{CertPair, CertSpec, CertificateAuthority, PkiError, ServiceAccountKey};

/// The group kubeadm gives admin.conf and the apiserver's kubelet client; bootstrap binds it to
/// cluster-admin (kubeadm's ClusterRoleBinding `kubeadm:cluster-admins`).
pub const CLUSTER_ADMINS_GROUP: &str = "kubeadm:cluster-admins";

/// What the cluster's certificates are issued for.
#[derive(Clone, Debug)]
pub struct ClusterIdentity {
    pub cluster_name: String,
    pub node_name: String,
    pub node_ip: IpAddr,
    /// The first address of the service CIDR: the `kubernetes` Service's ClusterIP.
    pub service_vip: IpAddr,
    pub dns_domain: String,
    /// The apiserver URL the kubeconfigs name.
    pub apiserver_url: String,
}

/// One file of the layout, relative to the state directory.
#[derive(Clone, Debug)]
pub struct LayoutFile {
    pub path: String,
    pub contents: String,
    /// Keys and kubeconfigs (which embed keys): mode 0600.
    pub private: bool,
}

/// The apiserver serving certificate's SANs: the node's name and address, loopback, the
/// `kubernetes` Service's names and ClusterIP (kubeadm adds loopback only through
/// `certSANs`; here it is always there, because the local tools reach the apiserver on it).
pub fn apiserver_sans(id: &ClusterIdentity) -> Vec<String> {
    let mut sans = vec![
        id.node_name.clone(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{}", id.dns_domain),
        id.service_vip.to_string(),
        id.node_ip.to_string(),
        "127.0.0.1".to_string(),
    ];
    dedup(&mut sans);
    sans
}

/// etcd's serving and peer SANs (kubeadm: node name, localhost, the advertise address, the
/// loopback addresses).
pub fn etcd_sans(id: &ClusterIdentity) -> Vec<String> {
    let mut sans = vec![
        id.node_name.clone(),
        "localhost".to_string(),
        id.node_ip.to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    dedup(&mut sans);
    sans
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// Which CA signs a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    Cluster,
    FrontProxy,
    Etcd,
}

/// A leaf certificate of the layout: its file stem under pki/, its signer and its subject.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub stem: &'static str,
    pub signer: Signer,
    pub spec: CertSpec,
}

/// Every leaf certificate kubeadm issues for a control-plane node with a local etcd.
pub fn leaves(id: &ClusterIdentity) -> Vec<Leaf> {
    let both = |cn: &str, s: Vec<String>| CertSpec {
        common_name: cn.to_string(),
        sans: s,
        server: true,
        client: true,
        ..Default::default()
    };
    vec![
        Leaf {
            stem: "apiserver",
            signer: Signer::Cluster,
            spec: CertSpec {
                common_name: "kube-apiserver".into(),
                sans: apiserver_sans(id),
                server: true,
                ..Default::default()
            },
        },
        Leaf {
            stem: "apiserver-kubelet-client",
            signer: Signer::Cluster,
            spec: CertSpec::client("kube-apiserver-kubelet-client", &[CLUSTER_ADMINS_GROUP]),
        },
        Leaf {
            stem: "front-proxy-client",
            signer: Signer::FrontProxy,
            spec: CertSpec::client("front-proxy-client", &[]),
        },
        Leaf {
            stem: "etcd/server",
            signer: Signer::Etcd,
            spec: both(&id.node_name, etcd_sans(id)),
        },
        Leaf {
            stem: "etcd/peer",
            signer: Signer::Etcd,
            spec: both(&id.node_name, etcd_sans(id)),
        },
        Leaf {
            stem: "etcd/healthcheck-client",
            signer: Signer::Etcd,
            spec: CertSpec::client("kube-etcd-healthcheck-client", &[]),
        },
        Leaf {
            stem: "apiserver-etcd-client",
            signer: Signer::Etcd,
            spec: CertSpec::client("kube-apiserver-etcd-client", &[]),
        },
    ]
}

/// A kubeconfig of the layout: file name, user (CN) and groups (O).
pub struct KubeconfigUser {
    pub file: &'static str,
    pub user: String,
    pub groups: Vec<&'static str>,
}

pub fn kubeconfig_users(id: &ClusterIdentity) -> Vec<KubeconfigUser> {
    vec![
        KubeconfigUser {
            file: "admin.conf",
            user: "kubernetes-admin".into(),
            groups: vec![CLUSTER_ADMINS_GROUP],
        },
        KubeconfigUser {
            file: "super-admin.conf",
            user: "kubernetes-super-admin".into(),
            groups: vec!["system:masters"],
        },
        KubeconfigUser {
            file: "controller-manager.conf",
            user: "system:kube-controller-manager".into(),
            groups: vec![],
        },
        KubeconfigUser {
            file: "scheduler.conf",
            user: "system:kube-scheduler".into(),
            groups: vec![],
        },
        KubeconfigUser {
            file: "kubelet.conf",
            user: format!("system:node:{}", id.node_name),
            groups: vec!["system:nodes"],
        },
    ]
}

/// Generates the whole layout: three CAs, the leaves, the service-account key and the
/// kubeconfigs (with embedded client certificates signed by the cluster CA).
pub fn generate(id: &ClusterIdentity) -> Result<Vec<LayoutFile>, PkiError> {
    let mut files = Vec::new();
    let mut pair = |stem: &str, p: &CertPair| {
        files.push(LayoutFile {
            path: format!("pki/{stem}.crt"),
            contents: p.cert_pem.clone(),
            private: false,
        });
        files.push(LayoutFile {
            path: format!("pki/{stem}.key"),
            contents: p.key_pem.clone(),
            private: true,
        });
    };
    // kubeadm's CA common names.
    let cluster_ca = CertificateAuthority::new("kubernetes")?;
    let front_proxy_ca = CertificateAuthority::new("front-proxy-ca")?;
    let etcd_ca = CertificateAuthority::new("etcd-ca")?;
    pair("ca", cluster_ca.pair());
    pair("front-proxy-ca", front_proxy_ca.pair());
    pair("etcd/ca", etcd_ca.pair());
    for leaf in leaves(id) {
        let ca = match leaf.signer {
            Signer::Cluster => &cluster_ca,
            Signer::FrontProxy => &front_proxy_ca,
            Signer::Etcd => &etcd_ca,
        };
        pair(leaf.stem, &ca.issue(&leaf.spec)?);
    }
    let sa = ServiceAccountKey::generate()?;
    files.push(LayoutFile {
        path: "pki/sa.key".into(),
        contents: sa.private_pem,
        private: true,
    });
    files.push(LayoutFile {
        path: "pki/sa.pub".into(),
        contents: sa.public_pem,
        private: false,
    });
    for u in kubeconfig_users(id) {
        let cert = cluster_ca.issue(&CertSpec::client(&u.user, &u.groups))?;
        files.push(LayoutFile {
            path: u.file.to_string(),
            contents: kubeconfig::render(
                &id.cluster_name,
                &id.apiserver_url,
                &cluster_ca.pair().cert_pem,
                &u.user,
                Credentials::ClientCert(&cert),
            ),
            private: true,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;

    fn id() -> ClusterIdentity {
        ClusterIdentity {
            cluster_name: "kubernetes".into(),
            node_name: "node-a".into(),
            node_ip: "192.0.2.10".parse().expect("ip"),
            service_vip: "10.96.0.1".parse().expect("ip"),
            dns_domain: "cluster.local".into(),
            apiserver_url: "https://192.0.2.10:6443".into(),
        }
    }

    struct Parsed {
        subject_cn: String,
        subject_o: Vec<String>,
        issuer_cn: String,
        dns: Vec<String>,
        ips: Vec<String>,
        server_auth: bool,
        client_auth: bool,
        is_ca: bool,
    }

    fn parse(pem_text: &str) -> Parsed {
        let (_, pem) = parse_x509_pem(pem_text.as_bytes()).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        let cn = |name: &X509Name| {
            name.iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(b) => {
                        let ip: IpAddr = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).map(IpAddr::from).expect("v4"),
                            _ => <[u8; 16]>::try_from(*b).map(IpAddr::from).expect("v6"),
                        };
                        ips.push(ip.to_string());
                    }
                    _ => {}
                }
            }
        }
        let eku = cert.extended_key_usage().ok().flatten().map(|e| e.value);
        Parsed {
            subject_cn: cn(cert.subject()),
            subject_o: cert
                .subject()
                .iter_organization()
                .filter_map(|o| o.as_str().ok().map(str::to_string))
                .collect(),
            issuer_cn: cn(cert.issuer()),
            dns,
            ips,
            server_auth: eku.map(|e| e.server_auth).unwrap_or(false),
            client_auth: eku.map(|e| e.client_auth).unwrap_or(false),
            is_ca: cert.is_ca(),
        }
    }

    fn file<'a>(files: &'a [LayoutFile], path: &str) -> &'a LayoutFile {
        files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} is not in the layout"))
    }

    #[test]
    fn the_layout_has_kubeadms_files_and_only_keys_and_kubeconfigs_are_private() {
        let files = generate(&id()).expect("generate");
        let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        paths.sort();
        let mut want = vec!["pki/sa.key", "pki/sa.pub"];
        for stem in [
            "ca",
            "apiserver",
            "apiserver-kubelet-client",
            "apiserver-etcd-client",
            "front-proxy-ca",
            "front-proxy-client",
            "etcd/ca",
            "etcd/server",
            "etcd/peer",
            "etcd/healthcheck-client",
        ] {
            want.push(Box::leak(format!("pki/{stem}.crt").into_boxed_str()));
            want.push(Box::leak(format!("pki/{stem}.key").into_boxed_str()));
        }
        want.extend([
            "admin.conf",
            "super-admin.conf",
            "controller-manager.conf",
            "scheduler.conf",
            "kubelet.conf",
        ]);
        want.sort();
        assert_eq!(paths, want);
        for f in &files {
            let secret = f.path.ends_with(".key") || f.path.ends_with(".conf");
            assert_eq!(f.private, secret, "{}", f.path);
        }
    }

    #[test]
    fn the_apiserver_serves_every_name_the_cluster_reaches_it_by() {
        let files = generate(&id()).expect("generate");
        let c = parse(&file(&files, "pki/apiserver.crt").contents);
        assert_eq!(c.subject_cn, "kube-apiserver");
        assert_eq!(c.issuer_cn, "kubernetes");
        for dns in [
            "node-a",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            assert!(
                c.dns.contains(&dns.to_string()),
                "{dns} missing: {:?}",
                c.dns
            );
        }
        for ip in ["192.0.2.10", "127.0.0.1", "10.96.0.1"] {
            assert!(c.ips.contains(&ip.to_string()), "{ip} missing: {:?}", c.ips);
        }
        assert!(c.server_auth && !c.client_auth && !c.is_ca);
    }

    #[test]
    fn clients_carry_kubeadms_users_and_groups_and_only_client_usage() {
        let files = generate(&id()).expect("generate");
        for (stem, cn, groups, issuer) in [
            (
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                vec![CLUSTER_ADMINS_GROUP],
                "kubernetes",
            ),
            (
                "apiserver-etcd-client",
                "kube-apiserver-etcd-client",
                vec![],
                "etcd-ca",
            ),
            (
                "etcd/healthcheck-client",
                "kube-etcd-healthcheck-client",
                vec![],
                "etcd-ca",
            ),
            (
                "front-proxy-client",
                "front-proxy-client",
                vec![],
                "front-proxy-ca",
            ),
        ] {
            let c = parse(&file(&files, &format!("pki/{stem}.crt")).contents);
            assert_eq!(c.subject_cn, cn, "{stem}");
            assert_eq!(c.subject_o, groups, "{stem}");
            assert_eq!(c.issuer_cn, issuer, "{stem}");
            assert!(c.client_auth && !c.server_auth, "{stem} usages");
        }
    }

    #[test]
    fn etcd_serves_and_peers_with_both_usages_on_its_node_names() {
        let files = generate(&id()).expect("generate");
        for stem in ["etcd/server", "etcd/peer"] {
            let c = parse(&file(&files, &format!("pki/{stem}.crt")).contents);
            assert_eq!(c.subject_cn, "node-a");
            assert_eq!(c.issuer_cn, "etcd-ca");
            assert!(c.server_auth && c.client_auth, "{stem} usages");
            assert!(c.dns.contains(&"localhost".to_string()));
            for ip in ["192.0.2.10", "127.0.0.1", "::1"] {
                assert!(c.ips.contains(&ip.to_string()), "{stem}: {ip}");
            }
        }
    }

    #[test]
    fn the_three_cas_are_distinct_self_signed_authorities() {
        let files = generate(&id()).expect("generate");
        let mut names = Vec::new();
        for stem in ["ca", "front-proxy-ca", "etcd/ca"] {
            let c = parse(&file(&files, &format!("pki/{stem}.crt")).contents);
            assert!(c.is_ca, "{stem}");
            assert_eq!(c.subject_cn, c.issuer_cn, "{stem} is self-signed");
            names.push(c.subject_cn);
        }
        assert_eq!(names, ["kubernetes", "front-proxy-ca", "etcd-ca"]);
    }

    #[test]
    fn kubeconfigs_name_the_apiserver_and_their_users() {
        let files = generate(&id()).expect("generate");
        for (conf, user, group) in [
            ("admin.conf", "kubernetes-admin", Some(CLUSTER_ADMINS_GROUP)),
            (
                "super-admin.conf",
                "kubernetes-super-admin",
                Some("system:masters"),
            ),
            (
                "controller-manager.conf",
                "system:kube-controller-manager",
                None,
            ),
            ("scheduler.conf", "system:kube-scheduler", None),
            ("kubelet.conf", "system:node:node-a", Some("system:nodes")),
        ] {
            let text = &file(&files, conf).contents;
            let doc: serde_yaml::Value = serde_yaml::from_str(text).expect("yaml");
            assert_eq!(
                doc["clusters"][0]["cluster"]["server"].as_str(),
                Some("https://192.0.2.10:6443"),
                "{conf}"
            );
            let data = doc["users"][0]["user"]["client-certificate-data"]
                .as_str()
                .expect("client cert");
            use base64::Engine;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64");
            let c = parse(std::str::from_utf8(&pem).expect("utf8"));
            assert_eq!(c.subject_cn, user, "{conf}");
            assert_eq!(c.subject_o.first().map(String::as_str), group, "{conf}");
            assert_eq!(c.issuer_cn, "kubernetes", "{conf}");
        }
    }

    #[test]
    fn sans_are_not_repeated_when_the_node_name_is_an_address() {
        let mut i = id();
        i.node_name = "192.0.2.10".into();
        let sans = apiserver_sans(&i);
        assert_eq!(sans.iter().filter(|s| *s == "192.0.2.10").count(), 1);
    }
}
