//! A small certificate authority over rcgen, shaped after kubeadm's PKI (a cluster CA that signs
//! serving and client certificates; clients are identified by CN = user and O = groups).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating certificate {name}: {source}")]
    Generate { name: String, source: rcgen::Error },
}

/// A PEM certificate with its PEM (PKCS#8) private key.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Who a leaf certificate is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertSpec {
    pub common_name: String,
    /// Kubernetes groups (subject O).
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (serving certificates).
    pub sans: Vec<String>,
    pub server: bool,
    pub client: bool,
}

impl CertSpec {
    pub fn client(user: &str, groups: &[&str]) -> Self {
        CertSpec {
            common_name: user.to_string(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            client: true,
            ..Default::default()
        }
    }

    pub fn server(common_name: &str, sans: &[&str]) -> Self {
        CertSpec {
            common_name: common_name.to_string(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            server: true,
            ..Default::default()
        }
    }
}

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    pair: CertPair,
}

// kubeadm: CA certificates last 10 years, leaf certificates one year.
const CA_VALIDITY: Duration = Duration::days(3650);
const LEAF_VALIDITY: Duration = Duration::days(365);

fn wrap<T>(name: &str, r: Result<T, rcgen::Error>) -> Result<T, PkiError> {
    r.map_err(|source| PkiError::Generate {
        name: name.to_string(),
        source,
    })
}

impl CertificateAuthority {
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let key = wrap(common_name, KeyPair::generate())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + CA_VALIDITY;
        let cert = wrap(common_name, params.self_signed(&key))?;
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(CertificateAuthority {
            issuer: Issuer::new(params, key),
            pair,
        })
    }

    /// The CA's own certificate and key.
    pub fn pair(&self) -> &CertPair {
        &self.pair
    }

    pub fn issue(&self, spec: &CertSpec) -> Result<CertPair, PkiError> {
        let name = spec.common_name.as_str();
        let key = wrap(name, KeyPair::generate())?;
        let mut params = wrap(name, CertificateParams::new(spec.sans.clone()))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        for org in &spec.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        let cert = wrap(name, params.signed_by(&key, &self.issuer))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The service-account token signing key (kubeadm's sa.key / sa.pub).
pub struct ServiceAccountKey {
    pub private_pem: String,
    pub public_pem: String,
}

impl ServiceAccountKey {
    pub fn generate() -> Result<Self, PkiError> {
        let key = wrap("service-account", KeyPair::generate())?;
        Ok(ServiceAccountKey {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_are_pem_and_differ_from_the_ca() {
        let ca = CertificateAuthority::new("ferrite-ca").expect("ca");
        let leaf = ca
            .issue(&CertSpec::client("system:admin", &["system:masters"]))
            .expect("leaf");
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        assert_ne!(leaf.cert_pem, ca.pair().cert_pem);
    }

    #[test]
    fn serving_certificate_accepts_ip_and_dns_sans() {
        let ca = CertificateAuthority::new("ferrite-ca").expect("ca");
        ca.issue(&CertSpec::server(
            "kube-apiserver",
            &["127.0.0.1", "localhost", "kubernetes.default.svc"],
        ))
        .expect("serving cert");
    }

    #[test]
    fn service_account_key_has_a_public_half() {
        let sa = ServiceAccountKey::generate().expect("sa key");
        assert!(sa.public_pem.contains("PUBLIC KEY"));
        assert!(sa.private_pem.contains("PRIVATE KEY"));
    }
}
