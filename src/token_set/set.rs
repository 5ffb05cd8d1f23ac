use std::{
    collections::HashMap,
    fmt,
    future::{Future, IntoFuture},
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderMap, Method, Request, Uri};
use tokio::{sync::mpsc, time::Instant};

use super::TokenKey;
use crate::{
    error::{ConfigError, TokenError},
    layer::Origin,
    refresh::{RefreshPolicy, Refresher, Shared, TokenHandle, TokenStatus},
    source::Fetcher,
    template::EndpointTemplate,
};

/// Makes the source of a key's tokens, for a set of custom sources.
pub(crate) type SourceForKey = dyn Fn(&TokenKey) -> Fetcher + Send + Sync;

/// Where the keys' tokens come from, and what they share.
pub(crate) enum Sources {
    /// The client-credentials endpoint, with each key's parameters.
    Endpoint(Box<EndpointTemplate>),
    /// A source per key, made by a function of the key.
    Custom {
        source_for: Arc<SourceForKey>,
        policy: RefreshPolicy,
        max_wait: Duration,
        lazy: bool,
        /// The cache and the name the user gave the source.
        #[cfg(feature = "redis")]
        shared_cache: Option<Box<(crate::shared_cache::AnyCache, String)>>,
    },
}

impl Sources {
    fn policy(&self) -> &RefreshPolicy {
        match self {
            Self::Endpoint(template) => &template.policy,
            Self::Custom { policy, .. } => policy,
        }
    }

    fn max_wait(&self) -> Duration {
        match self {
            Self::Endpoint(template) => template.max_wait,
            Self::Custom { max_wait, .. } => *max_wait,
        }
    }

    fn lazy(&self) -> bool {
        match self {
            Self::Endpoint(template) => template.lazy,
            Self::Custom { lazy, .. } => *lazy,
        }
    }

    /// Checks that `key` can make a token request.
    fn check(&self, key: &TokenKey) -> Result<(), ConfigError> {
        match self {
            Self::Endpoint(template) => template
                .endpoint(&key.parameters(&template.params))
                .map(drop),
            Self::Custom { .. } => Ok(()),
        }
    }

    /// The refresher of `key`'s tokens, for the store `shared`, and the store's DPoP prover.
    fn refresher(
        &self,
        key: &TokenKey,
    ) -> Result<(Option<Arc<crate::dpop::Prover>>, RefresherFor), ConfigError> {
        match self {
            Self::Endpoint(template) => {
                let params = key.parameters(&template.params);
                let fetcher = template.fetcher(template.endpoint(&params)?);
                #[cfg(feature = "redis")]
                let cache = template.shared_source(&params)?;
                Ok((
                    template.prover(),
                    Box::new(move |shared, policy| {
                        let refresher = Refresher::new(shared, fetcher, policy);
                        #[cfg(feature = "redis")]
                        let refresher = refresher.with_shared_cache(cache);
                        refresher
                    }),
                ))
            }
            Self::Custom {
                source_for,
                #[cfg(feature = "redis")]
                shared_cache,
                #[cfg(feature = "redis")]
                policy,
                ..
            } => {
                let fetcher = source_for(key);
                #[cfg(feature = "redis")]
                let cache = match shared_cache.as_deref() {
                    Some((cache, name)) => Some(crate::shared_cache::SharedSource::new(
                        cache,
                        &crate::shared_cache::KeyMaterial::token_source(
                            name,
                            &key.parameters(&Default::default()),
                        ),
                        policy.latest_margin_fn(),
                        false,
                    )?),
                    None => None,
                };
                Ok((
                    None,
                    Box::new(move |shared, policy| {
                        let refresher = Refresher::new(shared, fetcher, policy);
                        #[cfg(feature = "redis")]
                        let refresher = refresher.with_shared_cache(cache);
                        refresher
                    }),
                ))
            }
        }
    }
}

/// Makes a key's refresher once its store exists.
type RefresherFor = Box<dyn FnOnce(Arc<Shared>, RefreshPolicy) -> Refresher>;

/// A function that picks the token for a request; see [`TokenSetBuilder::route_with`].
type RouteFn = dyn Fn(&Method, &Uri, &HeaderMap) -> Option<TokenKey> + Send + Sync;

/// The fetch outcomes of a new key, subscribed before its refresh loop starts.
type Outcomes = tokio::sync::watch::Receiver<crate::refresh::Outcome>;

/// A refresh loop on its way to the set's task.
type Loop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sweeps for idle keys needed without a use before a key is dropped. A sweep runs every half
/// idle timeout, so a key goes after between one and one and a half idle timeouts unused.
const IDLE_SWEEPS: u8 = 2;

/// The shortest idle timeout: sweeps more often than every half second would only cost.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Configures a [`TokenSet`]. Made by
/// [`ClientCredentialsBuilder::build_set`](crate::ClientCredentialsBuilder::build_set).
pub struct TokenSetBuilder {
    template: Sources,
    routes: Vec<(Origin, TokenKey)>,
    route_fn: Option<Arc<RouteFn>>,
    idle_timeout: Duration,
}

impl fmt::Debug for TokenSetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSetBuilder")
            .field("routes", &self.routes)
            .field("route_fn", &self.route_fn.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl TokenSetBuilder {
    pub(crate) fn new(template: Sources) -> Self {
        Self {
            template,
            routes: Vec::new(),
            route_fn: None,
            idle_timeout: Duration::from_secs(15 * 60),
        }
    }

    /// Sends requests to `origin` (scheme, host, port) with the token of `key`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidParameter`] when `origin` already has a route, or when the key's
    /// parameters cannot go into a token request (a scope with a space in it, …).
    pub fn route(mut self, origin: Origin, key: TokenKey) -> Result<Self, ConfigError> {
        if self.routes.iter().any(|(known, _)| *known == origin) {
            return Err(ConfigError::InvalidParameter {
                name: "route".into(),
                reason: format!("{origin} has more than one route"),
            });
        }
        self.template.check(&key)?;
        self.routes.push((origin, key));
        Ok(self)
    }

    /// Picks the token for the requests that no [`route`](Self::route) and no [`TokenKey`]
    /// extension decide, from their method, URI and headers: `None` sends the request without
    /// a token. Default: none.
    ///
    /// A key this function returns whose parameters cannot go into a token request fails that
    /// request with a [`ConfigError`].
    pub fn route_with<F>(mut self, route: F) -> Self
    where
        F: Fn(&Method, &Uri, &HeaderMap) -> Option<TokenKey> + Send + Sync + 'static,
    {
        self.route_fn = Some(Arc::new(route));
        self
    }

    /// A key that no request has used for this long stops being refreshed and its token is
    /// dropped; the next request for it fetches a new one. Keys are checked every half of this
    /// time, so a key goes after between one and one and a half times this long unused.
    /// Default: 15 minutes; at least 1 s (shorter is taken as 1 s), any length above it.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.max(MIN_IDLE_TIMEOUT);
        self
    }

    /// Spawns the set's refresher task on the current tokio runtime, fetches the tokens of the
    /// keys named by [`route`](Self::route) and waits for them (unless
    /// [`lazy`](crate::ClientCredentialsBuilder::lazy), which leaves that to their first
    /// requests, like [`spawn`](Self::spawn)). Keys met later (through an
    /// extension or [`route_with`](Self::route_with)) are fetched on their first request.
    ///
    /// # Errors
    ///
    /// The first failure of a routed key's first token request.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn start(self) -> Result<TokenSet, TokenError> {
        if self.template.lazy() {
            return Ok(self.spawn());
        }
        let keys: Vec<TokenKey> = self.routes.iter().map(|(_, key)| key.clone()).collect();
        let set = self.spawn();
        let mut first = Vec::new();
        for key in keys {
            if let Ok((_, Some(outcomes))) = set.inner.entry(&key) {
                first.push(outcomes);
            }
        }
        for outcomes in first {
            Shared::first_outcome(outcomes).await?;
        }
        Ok(set)
    }

    /// Spawns the set's refresher task on the current tokio runtime without fetching any
    /// token. The first request for each key waits for its token.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn spawn(self) -> TokenSet {
        let (loops, new_loops) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            template: self.template,
            routes: self.routes,
            route_fn: self.route_fn,
            keys: ArcSwap::default(),
            create: Mutex::new(()),
            loops,
        });
        // At least half a second: the idle timeout is at least `MIN_IDLE_TIMEOUT`.
        let sweep = self.idle_timeout / 2;
        tokio::spawn(run(new_loops, Arc::downgrade(&inner), sweep));
        TokenSet { inner }
    }
}

/// A set of client-credentials tokens, one per [`TokenKey`], kept fresh by one background
/// task. Give it to a [`TokenSetLayer`](super::TokenSetLayer).
///
/// Cheap to clone; every clone sees the same tokens. The background task stops, and every
/// token is dropped, when the last clone is dropped. See the [module documentation](super).
#[derive(Clone)]
pub struct TokenSet {
    inner: Arc<Inner>,
}

struct Inner {
    template: Sources,
    routes: Vec<(Origin, TokenKey)>,
    route_fn: Option<Arc<RouteFn>>,
    /// The live keys. Read without a lock; replaced (copy on write) under `create`.
    keys: ArcSwap<HashMap<TokenKey, Arc<Entry>>>,
    /// Serializes changes of `keys`.
    create: Mutex<()>,
    /// Hands new refresh loops to the set's task.
    loops: mpsc::UnboundedSender<Refresher>,
}

/// One live key.
struct Entry {
    /// The only long-lived handle: dropping the entry stops the key's refresh loop once the
    /// requests that still hold a clone are done.
    handle: TokenHandle,
    /// Set by requests, cleared by the sweep.
    used: AtomicBool,
    /// Sweeps in a row that found the key unused.
    idle_sweeps: AtomicU8,
}

impl TokenSet {
    /// A snapshot of every live key's token, for health checks: the same [`TokenStatus`] a
    /// single [`TokenHandle`] reports. A key dropped for being idle is not listed.
    pub fn status(&self) -> Vec<(TokenKey, TokenStatus)> {
        self.inner
            .keys
            .load()
            .iter()
            .map(|(key, entry)| (key.clone(), entry.handle.status()))
            .collect()
    }

    /// How long requests wait for a token, unless the layer says otherwise.
    pub(crate) fn max_wait(&self) -> Duration {
        self.inner.template.max_wait()
    }

    /// The handle of the token for `request`, creating the key if needed, or `None` when no
    /// route decides the request.
    pub(crate) fn handle_for<B>(
        &self,
        request: &Request<B>,
    ) -> Option<Result<TokenHandle, ConfigError>> {
        self.handle_for_parts(
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions(),
        )
    }

    /// [`handle_for`](Self::handle_for) from the parts of a request, for clients whose
    /// requests are not `http::Request`s (reqwest's).
    pub(crate) fn handle_for_parts(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<Result<TokenHandle, ConfigError>> {
        let inner = &self.inner;
        if let Some((_, key)) = inner.routes.iter().find(|(origin, _)| origin.matches(uri)) {
            return Some(self.handle(key));
        }
        if let Some(key) = extensions.get::<TokenKey>() {
            return Some(self.handle(key));
        }
        let key = (inner.route_fn.as_ref()?)(method, uri, headers)?;
        Some(self.handle(&key))
    }

    fn handle(&self, key: &TokenKey) -> Result<TokenHandle, ConfigError> {
        if let Some(entry) = self.inner.keys.load().get(key) {
            // Read first: the flag's cache line is written once per sweep, not per request.
            if !entry.used.load(Ordering::Relaxed) {
                entry.used.store(true, Ordering::Relaxed);
            }
            return Ok(entry.handle.clone());
        }
        self.inner.entry(key).map(|(handle, _)| handle)
    }
}

impl Inner {
    /// The key's handle, creating the key if it is not live. A new key comes with a receiver
    /// of its fetch outcomes subscribed before its refresh loop starts.
    fn entry(&self, key: &TokenKey) -> Result<(TokenHandle, Option<Outcomes>), ConfigError> {
        let _create = self.create.lock().unwrap_or_else(|e| e.into_inner());
        let keys = self.keys.load_full();
        if let Some(entry) = keys.get(key) {
            entry.used.store(true, Ordering::Relaxed);
            return Ok((entry.handle.clone(), None));
        }
        let (prover, refresher_for) = self.template.refresher(key)?;
        let policy = self.template.policy().clone();
        let shared = Arc::new(Shared::new(self.template.max_wait(), &policy, prover));
        let outcomes = shared.outcomes();
        let refresher = refresher_for(Arc::clone(&shared), policy);
        let handle = TokenHandle::new(shared);
        let mut updated = HashMap::clone(&keys);
        updated.insert(
            key.clone(),
            Arc::new(Entry {
                handle: handle.clone(),
                used: AtomicBool::new(true),
                idle_sweeps: AtomicU8::new(0),
            }),
        );
        self.keys.store(Arc::new(updated));
        tracing::debug!(?key, "token key added");
        // If the task is gone, the refresher is dropped here, which fails the key's waiters
        // with `TokenUnavailable::Shutdown`.
        let _ = self.loops.send(refresher);
        Ok((handle, Some(outcomes)))
    }

    /// Drops the keys unused for `IDLE_SWEEPS` sweeps in a row.
    fn sweep(&self) {
        let _create = self.create.lock().unwrap_or_else(|e| e.into_inner());
        let keys = self.keys.load_full();
        let mut idle = Vec::new();
        for (key, entry) in keys.iter() {
            if entry.used.swap(false, Ordering::Relaxed) {
                entry.idle_sweeps.store(0, Ordering::Relaxed);
            } else if entry.idle_sweeps.fetch_add(1, Ordering::Relaxed) + 1 >= IDLE_SWEEPS {
                idle.push(key);
            }
        }
        if idle.is_empty() {
            return;
        }
        let mut updated = HashMap::clone(&keys);
        for key in idle {
            tracing::debug!(?key, "token key idle; dropping it");
            updated.remove(key);
        }
        self.keys.store(Arc::new(updated));
    }
}

/// The set's one task: runs every key's refresh loop, takes new ones from `new_loops`, and
/// sweeps for idle keys every `sweep`. Ends when the set is dropped.
async fn run(mut new_loops: mpsc::UnboundedReceiver<Refresher>, set: Weak<Inner>, sweep: Duration) {
    let mut loops: FuturesUnordered<Loop> = FuturesUnordered::new();
    let mut next_sweep = Instant::now().checked_add(sweep);
    loop {
        tokio::select! {
            refresher = new_loops.recv() => match refresher {
                Some(refresher) => loops.push(refresher.into_future()),
                // The set is gone; dropping the loops marks their stores stopped.
                None => break,
            },
            // A loop ends when its key was dropped and its last request is done.
            Some(()) = loops.next(), if !loops.is_empty() => {}
            () = sleep_until_some(next_sweep) => {
                let Some(set) = set.upgrade() else { break };
                set.sweep();
                next_sweep = Instant::now().checked_add(sweep);
            }
        }
    }
    tracing::debug!("token set task stopped");
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("routes", &self.inner.routes)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientCredentials;

    fn set_builder() -> TokenSetBuilder {
        ClientCredentials::builder("http://127.0.0.1/oauth/token", "id", "secret")
            .build_set()
            .unwrap()
    }

    /// A zero idle timeout is taken as the shortest one, rather than panicking in `spawn`.
    #[tokio::test(start_paused = true)]
    async fn idle_timeouts_saturate() {
        let zero = set_builder().idle_timeout(Duration::ZERO);
        assert_eq!(zero.idle_timeout, MIN_IDLE_TIMEOUT);
        drop(zero.spawn());
        let longest = set_builder().idle_timeout(Duration::MAX);
        assert_eq!(longest.idle_timeout, Duration::MAX);
        drop(longest.spawn());
        // Let the set tasks run their first sweep deadline computation and stop.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
