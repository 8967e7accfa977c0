//! A reader for unit tests of loadgen's frame readers: it returns scripted chunks, one per
//! read (the rest of a chunk larger than the read buffer comes with the next read), then
//! end of stream.

use monoio::buf::{IoBufMut, IoVecBufMut};
use monoio::io::AsyncReadRent;

/// Scripted chunks, handed out in order.
pub(crate) struct Script(pub(crate) Vec<Vec<u8>>);

impl AsyncReadRent for Script {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> monoio::BufResult<usize, T> {
        if self.0.is_empty() {
            return (Ok(0), buf);
        }
        let chunk = self.0.remove(0);
        let n = chunk.len().min(buf.bytes_total());
        // SAFETY: `n` bytes fit in the buffer's writable region.
        unsafe {
            std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.write_ptr(), n);
            buf.set_init(n);
        }
        if n < chunk.len() {
            self.0.insert(0, chunk[n..].to_vec());
        }
        (Ok(n), buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        (Ok(0), buf)
    }
}
