//! Shared informers (upstream SharedInformerFactory): one watch per resource type per process,
//! shared by every controller that needs that type. Each informer keeps a cache (a kube-runtime
//! reflector store of `Arc<K>`) and calls registered handlers with add/update/delete changes, so
//! controllers only map changes to work-queue keys.
//!
//! The watch is kube-runtime's watcher with streaming lists (a watch with `sendInitialEvents`,
//! as client-go's reflector does with its WatchListClient feature): the initial state arrives
//! object by object instead of as one list response holding every object at once, which would
//! be the process's peak memory on a large cluster (the apiserver ignores `limit` on lists served
//! from its cache). An apiserver that refuses streaming lists gets a list served from its cache
//! (resourceVersion=0) instead. Watch bookmarks are on, and a too-old resourceVersion (410)
//! starts the initial state over. Starting over is reconciled against the cache, so objects
//! deleted while the watch was down are reported as deletions, as client-go's DeltaFIFO Replace
//! does.
//!
//! Each cache keeps a namespace index (upstream `cache.NamespaceIndex`), so a controller lists
//! one namespace's objects without scanning the cluster's.
//!
//! A factory handle can be scoped to a cancellation token ([`InformerFactory::scoped`]): the
//! handlers registered through it are dropped once the token is cancelled. The controller manager
//! gives each controller such a handle, so a controller stopped by a configuration change leaves
//! no handler behind (the informers themselves stay, shared with the others).

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// What an informer tells its handlers.
pub enum Change<'a, K> {
    Added(&'a Arc<K>),
    Updated { old: &'a Arc<K>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

type Handler<K> = Arc<dyn Fn(Change<'_, K>) + Send + Sync>;

/// A handler and the scope it was registered in; a cancelled scope's handlers are dropped.
struct Registered<K> {
    scope: Option<CancellationToken>,
    handler: Handler<K>,
}

impl<K> Clone for Registered<K> {
    fn clone(&self) -> Self {
        Registered {
            scope: self.scope.clone(),
            handler: self.handler.clone(),
        }
    }
}

impl<K> Registered<K> {
    fn live(&self) -> bool {
        self.scope.as_ref().is_none_or(|t| !t.is_cancelled())
    }
}

/// While the initial state is delivered: the keys seen so far, and in delivery order.
type Relist<K> = (HashSet<ObjectRef<K>>, Vec<ObjectRef<K>>);

pub trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Watched for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// Names of the cached objects by namespace (`""` for cluster-scoped ones).
type NamespaceIndex = HashMap<String, HashSet<String>>;

struct Shared<K: Watched> {
    store: Store<K>,
    by_namespace: RwLock<NamespaceIndex>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    handlers: RwLock<Vec<Registered<K>>>,
}

/// A cheap handle to one shared informer. Handlers added through it live as long as the scope of
/// the factory handle it came from.
pub struct Informer<K: Watched> {
    shared: Arc<Shared<K>>,
    scope: Option<CancellationToken>,
}

impl<K: Watched> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            shared: self.shared.clone(),
            scope: self.scope.clone(),
        }
    }
}

impl<K: Watched> Informer<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// The cache (lister).
    pub fn store(&self) -> &Store<K> {
        &self.shared.store
    }

    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.shared.store.get(&r)
    }

    /// The cached objects of one namespace (upstream `Lister.<Kind>s(namespace).List`).
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let names: Vec<String> = match self.shared.by_namespace.read() {
            Ok(index) => index
                .get(namespace)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            Err(p) => p
                .into_inner()
                .get(namespace)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
        };
        names
            .iter()
            .filter_map(|n| self.get(Some(namespace), n))
            .collect()
    }

    fn index(&self, obj: &K, present: bool) {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.meta().name.clone().unwrap_or_default();
        let mut index = self
            .shared
            .by_namespace
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if present {
            index.entry(ns).or_default().insert(name);
        } else if let Some(names) = index.get_mut(&ns) {
            names.remove(&name);
            if names.is_empty() {
                index.remove(&ns);
            }
        }
    }

    /// Replaces the index with one of the objects a (re)list delivered. Done before the store
    /// takes them and reports ready, so a controller that starts on "synced" never lists a
    /// namespace through an index still empty (and creates what already exists).
    fn reindex<'a>(&self, keys: impl Iterator<Item = &'a ObjectRef<K>>) {
        let mut fresh = NamespaceIndex::new();
        for key in keys {
            fresh
                .entry(key.namespace.clone().unwrap_or_default())
                .or_default()
                .insert(key.name.clone());
        }
        *self
            .shared
            .by_namespace
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    /// Registers a handler. Like client-go's AddEventHandler on a started informer, objects
    /// already cached are replayed to it as additions. The handler is dropped when this handle's
    /// scope is cancelled.
    pub fn add_handler(&self, f: impl Fn(Change<'_, K>) + Send + Sync + 'static) {
        let f: Handler<K> = Arc::new(f);
        if let Ok(mut hs) = self.shared.handlers.write() {
            hs.retain(Registered::live);
            hs.push(Registered {
                scope: self.scope.clone(),
                handler: f.clone(),
            });
        }
        for obj in self.shared.store.state() {
            f(Change::Added(&obj));
        }
    }

    /// How many handlers are registered and not yet dropped with their scope.
    pub fn handler_count(&self) -> usize {
        match self.shared.handlers.read() {
            Ok(hs) => hs.iter().filter(|h| h.live()).count(),
            Err(p) => p.into_inner().iter().filter(|h| h.live()).count(),
        }
    }

    /// Waits until the first list has been applied.
    pub async fn wait_synced(&self) {
        let _ = self.shared.store.wait_until_ready().await;
    }

    fn dispatch(&self, change: Change<'_, K>) {
        let handlers = match self.shared.handlers.read() {
            Ok(hs) => hs.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if handlers.iter().any(|h| !h.live()) {
            // Dropping them also drops what they hold (a stopped controller's queue).
            if let Ok(mut hs) = self.shared.handlers.write() {
                hs.retain(Registered::live);
            }
        }
        for h in handlers.iter().filter(|h| h.live()) {
            let h = &h.handler;
            match &change {
                Change::Added(o) => h(Change::Added(o)),
                Change::Updated { old, new } => h(Change::Updated { old, new }),
                Change::Deleted(o) => h(Change::Deleted(o)),
            }
        }
    }

    async fn run(self, api: Api<K>, shutdown: CancellationToken) {
        let Some(mut writer) = self.shared.writer.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        let mut streaming = true;
        let mut stream =
            watcher::watcher(api.clone(), watcher::Config::default().streaming_lists())
                .default_backoff()
                .boxed();
        let mut synced = false;
        // Keys seen during a relist, to report what vanished while we were not watching.
        let mut relist: Option<Relist<K>> = None;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = stream.next() => e,
            };
            let Some(event) = event else { return };
            let mut event = match event {
                Ok(e) => e,
                Err(e) if streaming && !synced && refuses_streaming_lists(&e) => {
                    tracing::info!(kind = %K::kind(&()), error = %e, "the apiserver refuses streaming lists; listing instead");
                    streaming = false;
                    let config = watcher::Config::default().any_semantic();
                    stream = watcher::watcher(api.clone(), config)
                        .default_backoff()
                        .boxed();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying with backoff");
                    continue;
                }
            };
            trim_managed_fields(&mut event);
            match &event {
                Event::Apply(obj) => {
                    let key = ObjectRef::from_obj(obj);
                    let old = self.shared.store.get(&key);
                    writer.apply_watcher_event(&event);
                    self.index(obj, true);
                    // Handlers get the cached Arc rather than another copy of the object.
                    if let Some(new) = self.shared.store.get(&key) {
                        self.notify_upsert(old, &new);
                    }
                }
                Event::Delete(obj) => {
                    writer.apply_watcher_event(&event);
                    self.index(obj, false);
                    // The watch's final state, as upstream's delete handlers get it.
                    self.dispatch(Change::Deleted(&Arc::new(obj.clone())));
                }
                Event::Init => {
                    writer.apply_watcher_event(&event);
                    relist = Some((HashSet::new(), Vec::new()));
                }
                Event::InitApply(obj) => {
                    writer.apply_watcher_event(&event);
                    if let Some((seen, applied)) = relist.as_mut() {
                        let key = ObjectRef::from_obj(obj);
                        seen.insert(key.clone());
                        applied.push(key);
                    }
                }
                Event::InitDone => {
                    synced = true;
                    let before = self.shared.store.state();
                    if let Some((seen, _)) = &relist {
                        self.reindex(seen.iter());
                    }
                    writer.apply_watcher_event(&event);
                    if let Some((seen, applied)) = relist.take() {
                        let old: HashMap<ObjectRef<K>, Arc<K>> = before
                            .into_iter()
                            .map(|o| (ObjectRef::from_obj(o.as_ref()), o))
                            .collect();
                        // Handlers get the objects now cached, not copies kept on the way.
                        for key in &applied {
                            if let Some(new) = self.shared.store.get(key) {
                                self.notify_upsert(old.get(key).cloned(), &new);
                            }
                        }
                        for (key, gone) in &old {
                            if !seen.contains(key) {
                                self.dispatch(Change::Deleted(gone));
                            }
                        }
                    }
                }
            }
        }
    }

    fn notify_upsert(&self, old: Option<Arc<K>>, new: &Arc<K>) {
        match old {
            // A relist re-delivers unchanged objects; handlers only care about real changes.
            Some(old)
                if old.meta().resource_version.is_some()
                    && old.meta().resource_version == new.meta().resource_version => {}
            Some(old) => self.dispatch(Change::Updated { old: &old, new }),
            None => self.dispatch(Change::Added(new)),
        }
    }
}

/// Whether a watch error says the apiserver does not serve streaming lists (the WatchList
/// feature gate off, or a server older than it): a request it rejects as invalid or bad, rather
/// than one that may succeed on retry.
fn refuses_streaming_lists(e: &watcher::Error) -> bool {
    let code = match e {
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return false,
    };
    matches!(code, 400 | 422)
}

/// Drops `metadata.managedFields` before an object is cached, as kube-scheduler and
/// kube-controller-manager do with their informers' transform (TrimManagedFields): no controller
/// reads them, and on busy objects they are a large share of the cached bytes. A later PUT of a
/// cached object without managedFields leaves the server's managedFields as they are.
///
/// The metadata lists also drop the spare room a decoded `Vec` grows with (a single owner
/// reference would otherwise keep room for four), since every cached object carries them.
fn trim_managed_fields<K: Resource>(event: &mut Event<K>) {
    if let Event::Apply(obj) | Event::InitApply(obj) | Event::Delete(obj) = event {
        let meta = obj.meta_mut();
        meta.managed_fields = None;
        if let Some(refs) = meta.owner_references.as_mut() {
            refs.shrink_to_fit();
        }
        if let Some(finalizers) = meta.finalizers.as_mut() {
            finalizers.shrink_to_fit();
        }
    }
}

type StartFn =
    Box<dyn FnOnce(kube::Client, CancellationToken) -> tokio::task::JoinHandle<()> + Send>;

/// One informer per resource type per process.
pub struct InformerFactory {
    client: kube::Client,
    inner: Arc<Mutex<FactoryState>>,
    /// Handlers registered through this handle's informers end with this token.
    scope: Option<CancellationToken>,
}

#[derive(Default)]
struct FactoryState {
    informers: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    pending: Vec<StartFn>,
    started: Option<CancellationToken>,
    syncs: Vec<Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>>,
}

impl InformerFactory {
    pub fn new(client: kube::Client) -> Arc<Self> {
        Arc::new(InformerFactory {
            client,
            inner: Arc::new(Mutex::new(FactoryState::default())),
            scope: None,
        })
    }

    /// A handle on the same informers whose handlers are dropped once `scope` is cancelled.
    pub fn scoped(&self, scope: CancellationToken) -> Arc<Self> {
        Arc::new(InformerFactory {
            client: self.client.clone(),
            inner: self.inner.clone(),
            scope: Some(scope),
        })
    }

    /// The cluster-wide informer for `K`, created on first request. After `start`, new informers
    /// start at once.
    pub fn informer<K: Watched>(&self) -> Informer<K> {
        let mut state = match self.inner.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if let Some(inf) = state
            .informers
            .get(&TypeId::of::<K>())
            .and_then(|existing| existing.downcast_ref::<Informer<K>>())
        {
            let mut inf = inf.clone();
            inf.scope = self.scope.clone();
            return inf;
        }
        let (store, writer) = reflector::store::<K>();
        let informer = Informer {
            shared: Arc::new(Shared {
                store,
                by_namespace: RwLock::new(HashMap::new()),
                writer: Mutex::new(Some(writer)),
                handlers: RwLock::new(Vec::new()),
            }),
            scope: None,
        };
        state
            .informers
            .insert(TypeId::of::<K>(), Box::new(informer.clone()));
        let for_sync = informer.clone();
        state.syncs.push(Box::new(move || {
            let i = for_sync.clone();
            Box::pin(async move { i.wait_synced().await })
        }));
        let to_start = informer.clone();
        let start: StartFn =
            Box::new(move |client, token| tokio::spawn(to_start.run(Api::<K>::all(client), token)));
        match state.started.clone() {
            Some(token) => {
                start(self.client.clone(), token);
            }
            None => state.pending.push(start),
        }
        let mut informer = informer;
        informer.scope = self.scope.clone();
        informer
    }

    /// Starts every informer requested so far (and later ones as they are requested).
    pub fn start(&self, shutdown: CancellationToken) {
        let pending = {
            let mut state = match self.inner.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            state.started = Some(shutdown.clone());
            std::mem::take(&mut state.pending)
        };
        for start in pending {
            start(self.client.clone(), shutdown.clone());
        }
    }

    /// Waits until every informer requested so far has listed once.
    pub async fn wait_for_cache_sync(&self) {
        let waits: Vec<_> = match self.inner.lock() {
            Ok(s) => s.syncs.iter().map(|f| f()).collect(),
            Err(p) => p.into_inner().syncs.iter().map(|f| f()).collect(),
        };
        futures::future::join_all(waits).await;
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn offline_client() -> kube::Client {
        // Never contacted: no informer is started.
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("a valid URL"));
        kube::Client::try_from(config).expect("a client")
    }

    #[tokio::test]
    async fn handlers_of_a_scoped_handle_are_dropped_when_its_scope_ends() {
        let factory = InformerFactory::new(offline_client());
        let scope = CancellationToken::new();
        let scoped = factory.scoped(scope.clone());
        factory.informer::<ConfigMap>().add_handler(|_| {});
        scoped.informer::<ConfigMap>().add_handler(|_| {});
        assert_eq!(factory.informer::<ConfigMap>().handler_count(), 2);
        scope.cancel();
        assert_eq!(factory.informer::<ConfigMap>().handler_count(), 1);
        // A later registration prunes the dead handler for good.
        factory.informer::<ConfigMap>().add_handler(|_| {});
        let hs = factory.informer::<ConfigMap>();
        let total = hs.shared.handlers.read().map(|h| h.len()).unwrap_or(0);
        assert_eq!(total, 2);
    }

    #[tokio::test]
    async fn a_scoped_handle_shares_the_informers_of_its_factory() {
        let factory = InformerFactory::new(offline_client());
        let scoped = factory.scoped(CancellationToken::new());
        let a = factory.informer::<ConfigMap>();
        let b = scoped.informer::<ConfigMap>();
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
    }
}
