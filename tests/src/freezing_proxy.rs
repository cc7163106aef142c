//! A TCP proxy on loopback whose open connections can be frozen: nothing more passes
//! either way, yet both sockets stay open, as when a peer's network vanishes without a
//! FIN or RST (a half-open connection). Connections made after a freeze pass normally.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How often an idle copy loop looks at its connection's flags.
const POLL: Duration = Duration::from_millis(50);

pub struct FreezingProxy {
    addr: SocketAddr,
    /// The frozen flag of every connection accepted so far.
    connections: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    stop: Arc<AtomicBool>,
}

impl FreezingProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted, stopping) = (connections.clone(), stop.clone());
        thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let frozen = Arc::new(AtomicBool::new(false));
                        accepted.lock().unwrap().push(frozen.clone());
                        pipe(&client, &server, frozen.clone(), stopping.clone());
                        pipe(&server, &client, frozen, stopping.clone());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
                    Err(_) => return,
                }
            }
        });
        FreezingProxy {
            addr,
            connections,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Freezes every connection open now; returns how many there were.
    pub fn freeze_open_connections(&self) -> usize {
        let connections = self.connections.lock().unwrap();
        for frozen in connections.iter() {
            frozen.store(true, Ordering::SeqCst);
        }
        connections.len()
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes, the proxy
/// stops, or the connection is frozen; a frozen connection keeps both sockets open, unread
/// and unwritten, until the proxy stops.
fn pipe(from: &TcpStream, to: &TcpStream, frozen: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    from.set_read_timeout(Some(POLL)).unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::SeqCst) {
            if frozen.load(Ordering::SeqCst) {
                thread::sleep(POLL);
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if frozen.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                        // Read just as the freeze landed: those bytes are lost, as they
                        // would be on a network that went away.
                        continue;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
