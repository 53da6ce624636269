//! The controller manager: runs every enabled controller Ferrite implements, on one shared set
//! of informers, while this process leads.

use std::collections::BTreeSet;

use ferrite_runtime::component::Context;

/// Controllers Ferrite implements so far (canonical names). Enabled controllers missing here are
/// reported at start-up and not run.
pub const IMPLEMENTED: &[&str] = &[];

/// Runs the enabled controllers until the context's token is cancelled.
pub async fn run(ctx: Context, enabled: BTreeSet<&'static str>) -> Result<(), String> {
    let (implemented, missing): (Vec<&str>, Vec<&str>) =
        enabled.iter().partition(|n| IMPLEMENTED.contains(n));
    if !missing.is_empty() {
        tracing::warn!(controllers = ?missing, "enabled controllers that Ferrite does not implement yet are not started");
    }
    tracing::info!(controllers = ?implemented, "starting controllers");
    ctx.informers.start(ctx.token.clone());
    ctx.informers.wait_for_cache_sync().await;
    ctx.health.set_ready(true);
    ctx.token.cancelled().await;
    tracing::info!("controllers stopped");
    Ok(())
}
