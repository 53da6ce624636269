//! The secure-serving, delegated-authentication and delegated-authorization flags that
//! kube-controller-manager and kube-scheduler take, with upstream names and defaults
//! (staging/src/k8s.io/apiserver/pkg/server/options/{serving.go,authentication.go,authorization.go}),
//! so that Ferrite runs from the command line kubeadm writes into the static pod manifests.

use crate::flags::parse_duration_flag;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::ServingError;

/// Upstream `ports.KubeControllerManagerPort`.
pub const CONTROLLER_MANAGER_SECURE_PORT: u16 = 10257;
/// Upstream `ports.KubeSchedulerPort`.
pub const SCHEDULER_SECURE_PORT: u16 = 10259;

/// Flattened into each component's flags (`#[command(flatten)] serving: ServingOptions`).
///
/// `--secure-port` has no clap default because the two components differ: the component passes
/// its own default (`CONTROLLER_MANAGER_SECURE_PORT` or `SCHEDULER_SECURE_PORT`) to
/// [`super::serve`] / [`ServingOptions::secure_port_or`].
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ServingOptions {
    /// The IP address on which to listen for the --secure-port port. The associated interface(s)
    /// must be reachable by the rest of the cluster, and by CLI/web clients. If blank or an
    /// unspecified address (0.0.0.0 or ::), all interfaces and IP address families will be used.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_address: IpAddr,

    /// The port on which to serve HTTPS with authentication and authorization. If 0, don't serve
    /// HTTPS at all. [default: 10257 for the controller manager, 10259 for the scheduler]
    #[arg(long, value_name = "PORT")]
    pub secure_port: Option<u16>,

    /// The directory where the TLS certs are located. If --tls-cert-file and
    /// --tls-private-key-file are provided, this flag will be ignored.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// File containing the default x509 Certificate for HTTPS. (CA cert, if any, concatenated
    /// after server cert). If HTTPS serving is enabled, and --tls-cert-file and
    /// --tls-private-key-file are not provided, a self-signed certificate and key are generated
    /// for the public address and saved to the directory specified by --cert-dir (in memory when
    /// --cert-dir is not set).
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// File containing the default x509 private key matching --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,

    /// If set, any request presenting a client certificate signed by one of the authorities in
    /// the client-ca-file is authenticated with an identity corresponding to the CommonName of
    /// the client certificate.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Root certificate bundle to verify client certificates before trusting usernames in
    /// request headers. Accepted for compatibility with kubeadm's manifests; front-proxy
    /// (request-header) authentication is not implemented, so such requests are judged by their
    /// other credentials only.
    #[arg(long, value_name = "FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,

    /// Accepted for compatibility; see --requestheader-client-ca-file.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub requestheader_allowed_names: Vec<String>,

    /// Accepted for compatibility; see --requestheader-client-ca-file.
    #[arg(long, value_delimiter = ',', value_name = "HEADERS")]
    pub requestheader_username_headers: Vec<String>,

    /// Accepted for compatibility; see --requestheader-client-ca-file.
    #[arg(long, value_delimiter = ',', value_name = "HEADERS")]
    pub requestheader_group_headers: Vec<String>,

    /// Accepted for compatibility; see --requestheader-client-ca-file.
    #[arg(long, value_delimiter = ',', value_name = "PREFIXES")]
    pub requestheader_extra_headers_prefix: Vec<String>,

    /// kubeconfig file pointing at the 'core' kubernetes server with enough rights to create
    /// tokenreviews.authentication.k8s.io. Defaults to the component's own client.
    #[arg(long, value_name = "FILE")]
    pub authentication_kubeconfig: Option<PathBuf>,

    /// The duration to cache responses from the webhook token authenticator.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_flag)]
    pub authentication_token_webhook_cache_ttl: Duration,

    /// If false, the authentication-kubeconfig will be used to lookup missing authentication
    /// configuration from the cluster.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    pub authentication_skip_lookup: bool,

    /// If true, failures to look up missing authentication configuration from the cluster are not
    /// considered fatal. Note that this can result in authentication that treats all requests as
    /// anonymous.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    pub authentication_tolerate_lookup_failure: bool,

    /// kubeconfig file pointing at the 'core' kubernetes server with enough rights to create
    /// subjectaccessreviews.authorization.k8s.io. Defaults to the component's own client.
    #[arg(long, value_name = "FILE")]
    pub authorization_kubeconfig: Option<PathBuf>,

    /// A list of HTTP paths to skip during authorization, i.e. these are authorized without
    /// contacting the 'core' kubernetes server.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PATHS",
        default_value = "/healthz,/readyz,/livez"
    )]
    pub authorization_always_allow_paths: Vec<String>,

    /// The duration to cache 'authorized' responses from the webhook authorizer.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_flag)]
    pub authorization_webhook_cache_authorized_ttl: Duration,

    /// The duration to cache 'unauthorized' responses from the webhook authorizer.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_flag)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,

    /// Base name of the generated self-signed pair in --cert-dir (`<name>.crt`, `<name>.key`).
    /// Not a flag: upstream hard-codes it per component (`kube-controller-manager`,
    /// `kube-scheduler`); components set it, `ferrite` is used otherwise.
    #[arg(skip)]
    pub cert_pair_name: Option<String>,
}

impl ServingOptions {
    /// The port to listen on: the flag when given, else the component's default. 0 means
    /// "do not serve", as upstream.
    pub fn secure_port_or(&self, default_port: u16) -> u16 {
        self.secure_port.unwrap_or(default_port)
    }

    pub(crate) fn pair_name(&self) -> &str {
        self.cert_pair_name.as_deref().unwrap_or("ferrite")
    }
}

/// `--authorization-always-allow-paths`, compiled as upstream's path authorizer
/// (staging/src/k8s.io/apiserver/pkg/authorization/path/path.go): a leading `/` is optional,
/// a trailing `*` makes a prefix match, and `*` anywhere else is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlwaysAllowPaths {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl AlwaysAllowPaths {
    pub fn parse<S: AsRef<str>>(paths: &[S]) -> Result<Self, ServingError> {
        let mut parsed = Self::default();
        for raw in paths {
            let raw = raw.as_ref();
            // An empty list element comes from `--authorization-always-allow-paths=`, which
            // upstream's string slice reads as "no paths", not as "/".
            if raw.is_empty() {
                continue;
            }
            let p = raw.strip_prefix('/').unwrap_or(raw);
            match p.strip_suffix('*') {
                _ if p.is_empty() => parsed.exact.push(String::new()),
                Some(prefix) if !prefix.contains('*') => parsed.prefixes.push(prefix.to_string()),
                None if !p.contains('*') => parsed.exact.push(p.to_string()),
                _ => {
                    return Err(ServingError::InvalidAlwaysAllowPath {
                        path: raw.to_string(),
                    });
                }
            }
        }
        Ok(parsed)
    }

    pub fn allows(&self, path: &str) -> bool {
        let p = path.strip_prefix('/').unwrap_or(path);
        self.exact.iter().any(|e| e == p) || self.prefixes.iter().any(|pre| p.starts_with(pre))
    }
}

/// The options as parsed from an empty command line (every upstream default).
#[cfg(test)]
pub(crate) fn test_options() -> ServingOptions {
    use clap::Parser;
    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        serving: ServingOptions,
    }
    Cmd::parse_from(["test"]).serving
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        serving: ServingOptions,
    }

    fn parse(args: &[&str]) -> ServingOptions {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        Cmd::try_parse_from(argv).expect("flags parse").serving
    }

    #[test]
    fn defaults_match_upstream() {
        let o = parse(&[]);
        assert_eq!(o.bind_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(o.secure_port, None);
        assert_eq!(o.secure_port_or(CONTROLLER_MANAGER_SECURE_PORT), 10257);
        assert_eq!(o.secure_port_or(SCHEDULER_SECURE_PORT), 10259);
        assert_eq!(
            o.authorization_always_allow_paths,
            ["/healthz", "/readyz", "/livez"]
        );
        assert_eq!(
            o.authentication_token_webhook_cache_ttl,
            Duration::from_secs(10)
        );
        assert_eq!(
            o.authorization_webhook_cache_authorized_ttl,
            Duration::from_secs(10)
        );
        assert_eq!(
            o.authorization_webhook_cache_unauthorized_ttl,
            Duration::from_secs(10)
        );
        assert!(!o.authentication_skip_lookup);
        assert!(!o.authentication_tolerate_lookup_failure);
    }

    #[test]
    fn kubeadm_controller_manager_flags_are_accepted() {
        let o = parse(&[
            "--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf",
            "--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf",
            "--bind-address=127.0.0.1",
            "--client-ca-file=/etc/kubernetes/pki/ca.crt",
            "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt",
        ]);
        assert_eq!(o.bind_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(o.client_ca_file.is_some());
        assert!(o.authentication_kubeconfig.is_some());
    }

    #[test]
    fn secure_port_zero_is_kept_as_disabled() {
        let o = parse(&["--secure-port=0"]);
        assert_eq!(o.secure_port_or(CONTROLLER_MANAGER_SECURE_PORT), 0);
    }

    #[test]
    fn go_style_bool_flags_accept_bare_and_explicit_values() {
        assert!(parse(&["--authentication-skip-lookup"]).authentication_skip_lookup);
        assert!(!parse(&["--authentication-skip-lookup=false"]).authentication_skip_lookup);
        assert!(
            parse(&["--authentication-tolerate-lookup-failure=true"])
                .authentication_tolerate_lookup_failure
        );
    }

    #[test]
    fn always_allow_paths_match_exactly_with_or_without_leading_slash() {
        let paths = AlwaysAllowPaths::parse(&["/healthz", "readyz"]).unwrap();
        assert!(paths.allows("/healthz"));
        assert!(paths.allows("/readyz"));
        assert!(!paths.allows("/healthz/leaderElection"));
        assert!(!paths.allows("/metrics"));
    }

    #[test]
    fn always_allow_paths_with_trailing_star_match_by_prefix() {
        let paths = AlwaysAllowPaths::parse(&["/healthz/*"]).unwrap();
        assert!(paths.allows("/healthz/leaderElection"));
        assert!(!paths.allows("/metrics"));
    }

    #[test]
    fn always_allow_paths_reject_a_star_before_the_end() {
        assert!(matches!(
            AlwaysAllowPaths::parse(&["/he*lthz"]),
            Err(ServingError::InvalidAlwaysAllowPath { .. })
        ));
        assert!(AlwaysAllowPaths::parse(&["/a/**"]).is_err());
    }

    #[test]
    fn always_allow_paths_from_the_flag_default_and_from_an_empty_flag() {
        let o = parse(&[]);
        let paths = AlwaysAllowPaths::parse(&o.authorization_always_allow_paths).unwrap();
        assert!(paths.allows("/livez"));

        let o = parse(&["--authorization-always-allow-paths="]);
        let paths = AlwaysAllowPaths::parse(&o.authorization_always_allow_paths).unwrap();
        assert!(!paths.allows("/healthz"));
        assert!(!paths.allows("/"));
    }

    #[test]
    fn always_allow_root_path_matches_only_root() {
        let paths = AlwaysAllowPaths::parse(&["/"]).unwrap();
        assert!(paths.allows("/"));
        assert!(!paths.allows("/metrics"));
    }
}
