//! Kubeconfig files with embedded credentials, as kubeadm writes them (admin.conf,
//! controller-manager.conf, scheduler.conf).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use crate::pki::CertPair;

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig<'a> {
    api_version: &'a str,
    kind: &'a str,
    clusters: Vec<Named<'a, Cluster>>,
    users: Vec<Named<'a, User>>,
    contexts: Vec<Named<'a, Context<'a>>>,
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct Cluster {
    cluster: ClusterInner,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterInner {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct User {
    user: UserInner,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserInner {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Serialize)]
struct Context<'a> {
    context: ContextInner<'a>,
}

#[derive(Serialize)]
struct ContextInner<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// How the kubeconfig's user authenticates.
pub enum Credentials<'a> {
    ClientCert(&'a CertPair),
    Token(&'a str),
}

/// Renders a single-context kubeconfig for `user` against `server`, trusting `ca_pem`.
pub fn render(
    cluster_name: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    creds: Credentials<'_>,
) -> String {
    let user_inner = match creds {
        Credentials::ClientCert(pair) => UserInner {
            client_certificate_data: Some(STANDARD.encode(&pair.cert_pem)),
            client_key_data: Some(STANDARD.encode(&pair.key_pem)),
            token: None,
        },
        Credentials::Token(token) => UserInner {
            client_certificate_data: None,
            client_key_data: None,
            token: Some(token.to_string()),
        },
    };
    let context = format!("{user}@{cluster_name}");
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: cluster_name,
            value: Cluster {
                cluster: ClusterInner {
                    server: server.to_string(),
                    certificate_authority_data: STANDARD.encode(ca_pem),
                },
            },
        }],
        users: vec![Named {
            name: user,
            value: User { user: user_inner },
        }],
        contexts: vec![Named {
            name: &context,
            value: Context {
                context: ContextInner {
                    cluster: cluster_name,
                    user,
                },
            },
        }],
        current_context: &context,
    };
    // Serialising plain structs of strings cannot fail.
    serde_yaml::to_string(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_kubeconfig_names_server_user_and_context() {
        let pair = CertPair {
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        };
        let text = render(
            "ferrite",
            "https://127.0.0.1:6443",
            "ca",
            "admin",
            Credentials::ClientCert(&pair),
        );
        assert!(text.contains("server: https://127.0.0.1:6443"));
        assert!(text.contains("current-context: admin@ferrite"));
        assert!(text.contains(&format!(
            "client-certificate-data: {}",
            STANDARD.encode("cert")
        )));
    }
}
