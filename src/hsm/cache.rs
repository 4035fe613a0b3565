//! The bounded cache of unwrapped key objects, keyed by key id and evicting the least recently
//! used; an evicted or forgotten object is destroyed once no operation still uses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cryptoki::object::ObjectHandle;

use super::context::lock;

/// Which object of a key a cache slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The secret key, or the private half of a key pair.
    Key,
    /// The public half, built from the stored SubjectPublicKeyInfo.
    Public,
}

/// Handles whose objects should be destroyed, with the generation they were made in.
type Graveyard = Arc<Mutex<Vec<(ObjectHandle, u64)>>>;

/// A session object made for the cache. When the last user drops it, its handle goes to the
/// graveyard, to be destroyed by the next caller that holds the holder session.
pub(crate) struct CachedObject {
    handle: ObjectHandle,
    generation: u64,
    graveyard: Graveyard,
}

impl CachedObject {
    pub(crate) fn handle(&self) -> ObjectHandle {
        self.handle
    }
}

impl Drop for CachedObject {
    fn drop(&mut self) {
        lock(&self.graveyard).push((self.handle, self.generation));
    }
}

struct Entry {
    object: Arc<CachedObject>,
    /// What the object was made from (the wrapped blob or the SPKI): a hit needs the same bytes,
    /// so a key id whose stored material changed never gets a stale object.
    source: Vec<u8>,
    last_use: u64,
}

#[derive(Default)]
struct Slots {
    key: Option<Entry>,
    public: Option<Entry>,
}

impl Slots {
    fn get_mut(&mut self, role: Role) -> &mut Option<Entry> {
        match role {
            Role::Key => &mut self.key,
            Role::Public => &mut self.public,
        }
    }
}

struct Lru {
    map: HashMap<String, Slots>,
    clock: u64,
    len: usize,
}

/// At most `capacity` cached objects. A hit costs one hash lookup, a byte comparison and a
/// reference-count increment; eviction scans for the oldest entry, which only happens after an
/// unwrap, itself far slower.
pub(crate) struct KeyCache {
    capacity: usize,
    lru: Mutex<Lru>,
    graveyard: Graveyard,
}

impl KeyCache {
    /// A cache of `capacity` objects; 0 disables caching (each use unwraps afresh).
    pub(crate) fn new(capacity: usize) -> KeyCache {
        KeyCache {
            capacity,
            lru: Mutex::new(Lru {
                map: HashMap::new(),
                clock: 0,
                len: 0,
            }),
            graveyard: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Takes ownership of a freshly made session object: it will be destroyed when unused.
    pub(crate) fn adopt(&self, handle: ObjectHandle, generation: u64) -> Arc<CachedObject> {
        Arc::new(CachedObject {
            handle,
            generation,
            graveyard: Arc::clone(&self.graveyard),
        })
    }

    /// The cached object for `id` in `role` made from `source` in `generation`, if any.
    pub(crate) fn get(
        &self,
        id: &str,
        role: Role,
        source: &[u8],
        generation: u64,
    ) -> Option<Arc<CachedObject>> {
        let mut lru = lock(&self.lru);
        lru.clock += 1;
        let now = lru.clock;
        let entry = lru.map.get_mut(id)?.get_mut(role).as_mut()?;
        if entry.object.generation != generation || entry.source != source {
            return None;
        }
        entry.last_use = now;
        Some(Arc::clone(&entry.object))
    }

    /// Caches `object` for `id` in `role`, replacing what was there and evicting the least
    /// recently used entries beyond capacity.
    pub(crate) fn insert(&self, id: &str, role: Role, source: &[u8], object: Arc<CachedObject>) {
        if self.capacity == 0 {
            return;
        }
        let mut dropped = Vec::new();
        {
            let mut lru = lock(&self.lru);
            lru.clock += 1;
            let entry = Entry {
                object,
                source: source.to_vec(),
                last_use: lru.clock,
            };
            let slot = lru.map.entry(id.to_string()).or_default().get_mut(role);
            let replaced = slot.replace(entry);
            match replaced {
                Some(old) => dropped.push(old),
                None => lru.len += 1,
            }
            while lru.len > self.capacity {
                match lru.evict_oldest() {
                    Some(old) => dropped.push(old),
                    None => break,
                }
            }
        }
        drop(dropped);
    }

    /// Drops every cached object of `id`.
    pub(crate) fn forget(&self, id: &str) {
        let removed = {
            let mut lru = lock(&self.lru);
            let removed = lru.map.remove(id);
            if let Some(slots) = &removed {
                let n = usize::from(slots.key.is_some()) + usize::from(slots.public.is_some());
                lru.len -= n;
            }
            removed
        };
        drop(removed);
    }

    /// Drops everything (after a reset the objects are gone already).
    pub(crate) fn clear(&self) {
        let old = {
            let mut lru = lock(&self.lru);
            lru.len = 0;
            std::mem::take(&mut lru.map)
        };
        drop(old);
    }

    /// Number of cached objects.
    pub(crate) fn len(&self) -> usize {
        lock(&self.lru).len
    }

    /// Handles no longer used by anyone, to destroy.
    pub(crate) fn take_graveyard(&self) -> Vec<(ObjectHandle, u64)> {
        std::mem::take(&mut *lock(&self.graveyard))
    }
}

impl Lru {
    fn evict_oldest(&mut self) -> Option<Entry> {
        let (id, role) = self
            .map
            .iter()
            .flat_map(|(id, slots)| {
                let key = slots.key.as_ref().map(|e| (e.last_use, id, Role::Key));
                let public = slots
                    .public
                    .as_ref()
                    .map(|e| (e.last_use, id, Role::Public));
                key.into_iter().chain(public)
            })
            .min_by_key(|(last_use, _, _)| *last_use)
            .map(|(_, id, role)| (id.clone(), role))?;
        let slots = self.map.get_mut(&id)?;
        let evicted = slots.get_mut(role).take();
        if slots.key.is_none() && slots.public.is_none() {
            self.map.remove(&id);
        }
        if evicted.is_some() {
            self.len -= 1;
        }
        evicted
    }
}
