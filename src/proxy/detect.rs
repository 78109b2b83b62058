//! Plaintext protocol detection: HTTP/2 prior knowledge (h2c) or HTTP/1.
//!
//! The bytes read to decide are replayed by [`Rewind`]. Detection reads no more than the
//! 24-byte HTTP/2 preface and stops at the first byte that rules it out, so an HTTP/1
//! request usually decides on its first read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    H2,
}

/// A stream that first replays the bytes read during detection.
#[derive(Debug)]
pub struct Rewind<S> {
    buf: [u8; 24],
    pos: u8,
    len: u8,
    inner: S,
}

/// Reads until the preface matches or stops matching. `Ok(None)`: the peer closed first.
pub async fn detect<S: AsyncRead + Unpin>(mut s: S) -> io::Result<Option<(Proto, Rewind<S>)>> {
    let mut buf = [0u8; 24];
    let mut len = 0usize;
    loop {
        let n = s.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(None);
        }
        len += n;
        let proto = if buf[..len] != H2_PREFACE[..len] {
            Some(Proto::Http1)
        } else if len == H2_PREFACE.len() {
            Some(Proto::H2)
        } else {
            None
        };
        if let Some(p) = proto {
            return Ok(Some((
                p,
                Rewind {
                    buf,
                    pos: 0,
                    len: len as u8,
                    inner: s,
                },
            )));
        }
    }
}

// === impl Rewind ===

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.len {
            let rest = &this.buf[this.pos as usize..this.len as usize];
            let n = rest.len().min(out.remaining());
            out.put_slice(&rest[..n]);
            this.pos += n as u8;
            // Hand over what else already arrived in the same read: hyper then parses a
            // request head in one go instead of growing its read buffer for a second read.
            if out.remaining() > 0 {
                // Pending or an error: the prefix is returned now, the rest on the next read.
                let _ = Pin::new(&mut this.inner).poll_read(cx, out);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn detects_and_replays() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let (p, mut r) = detect(b).await.unwrap().unwrap();
        assert_eq!(p, Proto::Http1);
        let mut got = [0u8; 16];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");

        let (mut a, b) = tokio::io::duplex(64);
        // The preface in two pieces, then a frame.
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(&H2_PREFACE[..5]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            a.write_all(&H2_PREFACE[5..]).await.unwrap();
            a.write_all(b"xyz").await.unwrap();
            a
        });
        let (p, mut r) = detect(b).await.unwrap().unwrap();
        assert_eq!(p, Proto::H2);
        let mut got = [0u8; 27];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..24], H2_PREFACE);
        assert_eq!(&got[24..], b"xyz");

        // POST shares the first letter with the preface.
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"P")
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut a, b"OST /")
            .await
            .unwrap();
        let (p, _) = detect(b).await.unwrap().unwrap();
        assert_eq!(p, Proto::Http1);
    }
}
