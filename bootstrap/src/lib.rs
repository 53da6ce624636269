//! Everything `ferrite bootstrap` needs to bring a control plane up: PKI and kubeconfigs today;
//! static pod manifests, the local node and the pivot come with the self-hosting work.
//! The test bed uses the same PKI and kubeconfig code, so both exercise one implementation.

pub mod kubeconfig;
pub mod pki;
