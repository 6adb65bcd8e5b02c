//! Recycled data-path buffers: one thread fills a buffer, another gives it
//! back once its bytes are gone, so a bulk transfer does not allocate and free
//! a 64 KiB buffer per read.
//!
//! Why it matters: glibc hands memory freed at the top of a heap back to the
//! kernel once more than 128 KiB lie there, and the next buffer faults its
//! pages in again (zeroed by the kernel). With buffers freed on another thread
//! than the one that allocated them, in bursts as queues drain, that happened
//! for about half of all bytes moved: page faults were 10-20% of a proxy's
//! CPU. A [`BufferPool`] keeps at most its depth of buffers; a buffer given
//! back to a full pool is freed, so what it holds is bounded in bytes.
//!
//! The other side of it: what connections freed stays with the process
//! (glibc keeps it in its arenas). After a burst of a thousand connections
//! that was 20-50 MiB of a device's memory for good;
//! [`release_free_memory`] hands it back once no connection is left, and
//! [`limit_heap_arenas`] keeps it where that can reach it.

use crossbeam_channel::{bounded, Receiver, Sender};
use tungstenite::Bytes;

/// Free heap memory worth handing back when the last connection ends (a
/// few connections' worth is kept: the next ones reuse it).
const RELEASE_THRESHOLD: usize = 1 << 20;

/// How many heaps (arenas) glibc may give threads. By default it makes one
/// per thread that finds the others busy, up to 8 per core, and keeps each
/// for good, with the top 128 KiB of each resident, where `malloc_trim`
/// does not reach: a burst of connections (a thread or two each) left up to
/// 16 of them behind on two cores, 2-3 MiB. One heap is enough: the data
/// path's buffers come from pools, and small allocations from glibc's
/// per-thread cache, which takes no lock. Measured, eight parallel bulk
/// transfers cost the same CPU with one heap as with sixteen (ratio 0.99).
const MAX_ARENAS: i32 = 1;

/// Limits glibc to [`MAX_ARENAS`] heaps. Called before any thread starts.
pub fn limit_heap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no thread allocates
    // concurrently this early.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS);
    }
}

/// Hands the heap's free memory back to the system (glibc's `malloc_trim`)
/// when at least [`RELEASE_THRESHOLD`] of it is held, so memory comes back
/// after a burst of connections. Called once no connection is left; it
/// costs a walk of the arenas, and nothing when there is little to give.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free >= RELEASE_THRESHOLD {
            // SAFETY: malloc_trim only returns free pages to the kernel.
            unsafe { libc::malloc_trim(0) };
            log::debug!(
                "Last connection ended: {} KiB of free heap handed back",
                free / 1024
            );
        }
    }
}

/// A bounded set of spare buffers of one size, shared by threads.
#[derive(Clone)]
pub struct BufferPool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    size: usize,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("size", &self.size)
            .field("spare", &self.rx.len())
            .finish()
    }
}

impl BufferPool {
    /// A pool keeping at most `depth` buffers of `size` bytes
    /// (`depth * size` bytes at most, nothing until buffers come back).
    pub fn new(depth: usize, size: usize) -> BufferPool {
        let (tx, rx) = bounded(depth);
        BufferPool { tx, rx, size }
    }

    /// Bytes of each buffer.
    pub fn size(&self) -> usize {
        self.size
    }

    /// A buffer of exactly `size()` bytes to read into. Its contents are
    /// unspecified (zeros, or what it held before): only the bytes written
    /// after taking it mean anything.
    pub fn take(&self) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(mut buf) => {
                // Zeroes only what lies past the buffer's last length.
                buf.resize(self.size, 0);
                buf
            }
            Err(_) => vec![0; self.size],
        }
    }

    /// An empty buffer with room for `size()` bytes, to copy into.
    pub fn take_empty(&self) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(mut buf) => {
                buf.clear();
                buf
            }
            Err(_) => Vec::with_capacity(self.size),
        }
    }

    /// Frees the spare buffers.
    pub fn clear(&self) {
        self.rx.try_iter().for_each(drop);
    }

    /// Gives a buffer back; it is freed when the pool is full, or when it
    /// is not one of this pool's size (so the pool never holds more than
    /// `depth` buffers of at most twice `size` bytes).
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() >= self.size && buf.capacity() <= 2 * self.size {
            let _ = self.tx.try_send(buf);
        }
    }

    /// `buf[range]` as [`Bytes`] without a copy; the buffer comes back to
    /// the pool (whole, its length unchanged: nothing to zero when it is
    /// taken again) when the last reference to the bytes is dropped.
    pub fn lend(&self, buf: Vec<u8>, range: std::ops::Range<usize>) -> Bytes {
        let end = range.end.min(buf.len());
        let start = range.start.min(end);
        Bytes::from_owner(Lent {
            buf,
            range: start..end,
            pool: self.clone(),
        })
    }
}

/// A pooled buffer on loan as [`Bytes`].
struct Lent {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    pool: BufferPool,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_the_pool_stays_bounded() {
        let pool = BufferPool::new(2, 1000);
        let a = pool.take();
        assert_eq!(a.len(), 1000);
        let ptr = a.as_ptr();
        let bytes = pool.lend(a, 10..1000);
        assert_eq!(bytes.len(), 990);
        let copy = bytes.clone();
        drop(bytes);
        assert_eq!(pool.rx.len(), 0, "still lent out");
        drop(copy);
        assert_eq!(pool.rx.len(), 1);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the same buffer, reused");
        assert_eq!(again.len(), 1000);
        // Full pool, foreign sizes: freed, not kept.
        pool.give(vec![0; 1000]);
        pool.give(vec![0; 1000]);
        pool.give(vec![0; 1000]);
        assert_eq!(pool.rx.len(), 2);
        let small = BufferPool::new(4, 1000);
        small.give(Vec::with_capacity(10));
        small.give(Vec::with_capacity(5000));
        assert_eq!(small.rx.len(), 0);
    }

    #[test]
    fn a_shortened_buffer_is_whole_again_when_taken() {
        let pool = BufferPool::new(1, 100);
        let mut b = pool.take();
        b.truncate(3);
        pool.give(b);
        assert_eq!(pool.take().len(), 100);
        let mut e = pool.take_empty();
        assert!(e.is_empty() && e.capacity() >= 100);
        e.extend_from_slice(b"abc");
        pool.give(e);
        assert!(pool.take_empty().is_empty());
    }
}
