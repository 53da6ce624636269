//! Serving certificate, client-CA verification and client-certificate identities.
//!
//! Upstream: `SecureServingOptions.MaybeDefaultWithSelfSignedCerts`
//! (staging/src/k8s.io/apiserver/pkg/server/options/serving.go) generates a CA and a serving
//! certificate signed by it when no `--tls-cert-file` is given (written to `--cert-dir` when set,
//! in memory otherwise); the x509 request authenticator
//! (staging/src/k8s.io/apiserver/pkg/authentication/request/x509) maps a verified client
//! certificate to CN = user name, O = groups.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

use super::ServingError;
use super::auth::UserInfo;
use super::options::ServingOptions;

/// A serving certificate chain and its private key.
pub(crate) struct CertKey {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// Resolves the serving certificate as upstream does: the given pair, else a pair in
/// `--cert-dir` (reused if readable, generated and written otherwise), else generated in memory.
pub(crate) fn serving_cert(opts: &ServingOptions) -> Result<CertKey, ServingError> {
    match (&opts.tls_cert_file, &opts.tls_private_key_file) {
        (Some(cert), Some(key)) => return load_cert_key(cert, key),
        (None, None) => {}
        _ => return Err(ServingError::IncompleteCertKeyPair),
    }
    let Some(dir) = &opts.cert_dir else {
        tracing::info!("generated self-signed serving certificate in memory");
        return generate_self_signed(opts.bind_address).map(|g| g.cert_key);
    };
    let cert_path = dir.join(format!("{}.crt", opts.pair_name()));
    let key_path = dir.join(format!("{}.key", opts.pair_name()));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => return load_cert_key(&cert_path, &key_path),
        (false, false) => {}
        // Upstream's certutil.CanReadCertAndKey refuses a half pair rather than overwrite it.
        _ => return Err(ServingError::IncompleteCertKeyPair),
    }
    let generated = generate_self_signed(opts.bind_address)?;
    write_file(&cert_path, generated.chain_pem.as_bytes(), 0o644)?;
    write_file(&key_path, generated.key_pem.as_bytes(), 0o600)?;
    tracing::info!(cert = %cert_path.display(), key = %key_path.display(), "generated self-signed serving certificate");
    Ok(generated.cert_key)
}

fn load_cert_key(cert_path: &Path, key_path: &Path) -> Result<CertKey, ServingError> {
    let chain = read_certs(cert_path)?;
    let key_pem = read_file(key_path)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| ServingError::ReadFile {
            path: key_path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| ServingError::NoPrivateKey {
            path: key_path.to_path_buf(),
        })?;
    Ok(CertKey { chain, key })
}

/// Every certificate in a PEM bundle; an empty bundle is an error rather than a server that
/// silently trusts nothing.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServingError> {
    let pem = read_file(path)?;
    parse_certs(&pem, path)
}

pub(crate) fn parse_certs(
    pem: &[u8],
    origin: &Path,
) -> Result<Vec<CertificateDer<'static>>, ServingError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ServingError::ReadFile {
            path: origin.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServingError::NoCertificates {
            path: origin.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_file(path: &Path) -> Result<Vec<u8>, ServingError> {
    fs::read(path).map_err(|source| ServingError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ServingError> {
    let wrap = |source: io::Error| ServingError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(wrap)?;
    }
    let mut open = fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = open.open(path).map_err(wrap)?;
    io::Write::write_all(&mut file, contents).map_err(wrap)
}

pub(crate) struct GeneratedCert {
    pub(crate) cert_key: CertKey,
    /// Serving certificate followed by its CA, as upstream writes `<pair>.crt`.
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

/// A one-year CA and a serving certificate signed by it for `localhost`, `127.0.0.1` and the
/// bind address (when it is a specific address), mirroring upstream's
/// `certutil.GenerateSelfSignedCertKeyWithFixtures("localhost", [127.0.0.1, bind], ...)`.
pub(crate) fn generate_self_signed(bind_address: IpAddr) -> Result<GeneratedCert, ServingError> {
    let now = jiff::Timestamp::now();
    let stamp = now.as_second();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    // Backdated a day so a peer with a slightly slow clock still accepts it.
    let not_before = today.yesterday().unwrap_or(today);
    let not_after = today
        .checked_add(jiff::Span::new().years(1))
        .unwrap_or(today);
    let ymd = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(d.year().into(), d.month() as u8, d.day() as u8)
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, format!("localhost-ca@{stamp}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    ca.not_before = ymd(not_before);
    ca.not_after = ymd(not_after);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut sans = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    if !bind_address.is_unspecified() && bind_address != IpAddr::V4(Ipv4Addr::LOCALHOST) {
        sans.push(SanType::IpAddress(bind_address));
    }
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("localhost@{stamp}"));
    leaf.subject_alt_names = sans;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = ymd(not_before);
    leaf.not_after = ymd(not_after);
    let leaf_cert = leaf.signed_by(&key, &issuer)?;

    Ok(GeneratedCert {
        chain_pem: format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        key_pem: key.serialize_pem(),
        cert_key: CertKey {
            chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        },
    })
}

/// The TLS configuration: the serving pair, and, when a client CA is known, optional client
/// certificates verified against it. Clients without a certificate still connect (they may
/// carry a bearer token or be anonymous); a certificate that does not verify fails the
/// handshake, where upstream answers 401 — both refuse the caller.
pub(crate) fn server_config(
    cert: CertKey,
    client_ca: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<rustls::ServerConfig>, ServingError> {
    // Explicit provider: the process may link more than one rustls backend.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for ca in cas {
                roots.add(ca)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(cert.chain, cert.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user a verified client certificate names: CN is the user name, every O a group, as
/// upstream's `x509.CommonNameUserConversion`. `None` when the subject has no CN (upstream then
/// tries the next authenticator) or the certificate cannot be parsed.
pub(crate) fn user_from_client_cert(cert: &CertificateDer<'_>) -> Option<UserInfo> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    // Go's pkix.Name keeps the last CN when several are present.
    let username = subject
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .last()?
        .to_string();
    if username.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(UserInfo {
        username,
        groups,
        ..UserInfo::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::options::test_options;

    #[test]
    fn generated_certificate_names_localhost_loopback_and_a_specific_bind_address() {
        let g = generate_self_signed("10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(
            g.cert_key.chain.len(),
            2,
            "serving certificate followed by its CA"
        );
        let (_, leaf) = x509_parser::parse_x509_certificate(g.cert_key.chain[0].as_ref()).unwrap();
        use x509_parser::extensions::GeneralName;
        let sans = &leaf
            .subject_alternative_name()
            .unwrap()
            .expect("has SANs")
            .value
            .general_names;
        let dns: Vec<&str> = sans
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect();
        let ips: Vec<&[u8]> = sans
            .iter()
            .filter_map(|n| match n {
                GeneralName::IPAddress(ip) => Some(*ip),
                _ => None,
            })
            .collect();
        assert_eq!(dns, ["localhost"]);
        assert_eq!(ips, [&[127, 0, 0, 1][..], &[10, 1, 2, 3][..]]);
        assert!(g.chain_pem.matches("BEGIN CERTIFICATE").count() == 2);
    }

    #[test]
    fn cert_dir_pair_is_generated_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("ferrite-serving-{}", uuid::Uuid::new_v4()));
        let opts = ServingOptions {
            cert_dir: Some(dir.clone()),
            cert_pair_name: Some("kube-scheduler".into()),
            ..test_options()
        };
        let first = serving_cert(&opts).unwrap();
        let (crt, key) = (
            dir.join("kube-scheduler.crt"),
            dir.join("kube-scheduler.key"),
        );
        assert!(crt.exists() && key.exists());
        let second = serving_cert(&opts).unwrap();
        assert_eq!(first.chain, second.chain);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_one_of_cert_and_key_is_an_error() {
        let opts = ServingOptions {
            tls_cert_file: Some("/nonexistent.crt".into()),
            ..test_options()
        };
        assert!(matches!(
            serving_cert(&opts),
            Err(ServingError::IncompleteCertKeyPair)
        ));
    }

    #[test]
    fn client_certificate_maps_common_name_to_user_and_organizations_to_groups() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "alice");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let cert = params.self_signed(&key).unwrap();
        let user = user_from_client_cert(cert.der()).unwrap();
        assert_eq!(user.username, "alice");
        assert_eq!(user.groups, ["system:masters"]);
    }

    #[test]
    fn client_certificate_without_common_name_names_no_user() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "team");
        let cert = params.self_signed(&key).unwrap();
        assert!(user_from_client_cert(cert.der()).is_none());
    }
}
