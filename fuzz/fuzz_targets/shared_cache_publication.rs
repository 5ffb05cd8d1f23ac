//! The shared cache's publication (`redis` feature): any message from the pub/sub connection
//! decodes to a value and its time to live, within bounds, or to a plain wake-up; what decodes
//! is exactly what the lease holder would have published; and any value the holder publishes
//! reads back as it was written.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tower_client_credentials::fuzzing::{
    MAX_PUBLISHED_VALUE, shared_cache_publish, shared_cache_published,
};

fuzz_target!(|data: &[u8]| {
    // Any message.
    if let Some((ttl, value)) = shared_cache_published(data) {
        assert!(!value.is_empty() && value.len() <= MAX_PUBLISHED_VALUE);
        assert_eq!(shared_cache_publish(&value, ttl), data);
    }
    // Any value, with a TTL from the first eight bytes.
    let (ttl, value) = data.split_first_chunk::<8>().map_or((0, data), |(ttl, value)| {
        (u64::from_be_bytes(*ttl), value)
    });
    let ttl = Duration::from_millis(ttl);
    let message = shared_cache_publish(value, ttl);
    match shared_cache_published(&message) {
        Some((read_ttl, read)) => {
            assert_eq!(read_ttl, ttl);
            assert_eq!(read, value);
        }
        // Only what cannot be carried: nothing, or more than the limit.
        None => assert!(value.is_empty() || value.len() > MAX_PUBLISHED_VALUE),
    }
});
