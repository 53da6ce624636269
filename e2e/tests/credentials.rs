//! `--use-service-account-credentials`: a controller's client authenticates as its own service
//! account and has exactly the `system:controller:<name>` permissions the apiserver ships.

use ferrite_e2e::bed::client_from;
use ferrite_e2e::testing::shared_bed;
use ferrite_runtime::credentials::ServiceAccountCredentials;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_controller_client_is_its_service_account_with_exactly_its_controller_role() {
    let bed = shared_bed(|o| o).await;
    let root = client_from(&bed.path("controller-manager.kubeconfig"))
        .await
        .expect("kcm client");
    let kc = kube::config::Kubeconfig::read_from(bed.path("controller-manager.kubeconfig"))
        .expect("kubeconfig");
    let base = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let token = CancellationToken::new();
    let creds = ServiceAccountCredentials::new(root, base, 20.0, 30, token.clone());
    let client = creds
        .client_for("deployment-controller")
        .await
        .expect("service account client");

    let whoami = client
        .request_text(
            http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
                .header("content-type", "application/json")
                .body(
                    br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#
                        .to_vec(),
                )
                .expect("request"),
        )
        .await
        .expect("self subject review");
    assert!(
        whoami.contains("system:serviceaccount:kube-system:deployment-controller"),
        "authenticated as: {whoami}"
    );
    // system:controller:deployment-controller may list deployments everywhere…
    Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list deployments");
    // …but not secrets.
    match Api::<Secret>::all(client)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("listing secrets should be forbidden, got {other:?}"),
    }
    token.cancel();
}
