//! Ferrite's scheduler: queue, cache, framework, plugins and binder. What exists today is the
//! process around it (leader election, serving); the scheduling loop comes next.

use ferrite_runtime::component::Context;

/// Runs the scheduler until the context's token is cancelled. No profile is implemented yet, so
/// pods are left for a scheduler that has one.
pub async fn run(ctx: Context) -> Result<(), String> {
    tracing::warn!("the scheduling loop is not implemented yet; this scheduler binds no pods");
    ctx.informers.start(ctx.token.clone());
    ctx.informers.wait_for_cache_sync().await;
    ctx.health.set_ready(true);
    ctx.token.cancelled().await;
    Ok(())
}
