//! A TCP proxy on every broker-to-broker path, so a test can cut one broker off from its peers.
//!
//! Brokers reach each other (raft traffic, messages between partitions) only at the addresses in
//! their own `--peers` list, and each broker gets its own list. Giving broker `i` the address of
//! proxy `i→j` for peer `j` routes every byte from `i` to `j` through a proxy owned by the test. A
//! blocked proxy drops the connections it carries and black-holes new ones: it accepts them and
//! reads and discards what arrives, like a network that loses every packet after the handshake.
//! Healing drops the black-holed connections too, so both sides reconnect through a working path.
//! Gateways and the test's own management requests bypass the proxies: isolation cuts a broker off
//! from its peers only, which is exactly the situation in which a stale leader could be tempted to
//! acknowledge writes it cannot replicate.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One proxy for the connections that broker `from` opens to broker `to`.
struct Proxy {
    from: usize,
    to: usize,
    addr: SocketAddr,
    /// True while the path is cut. Every change ends the connections opened before it.
    blocked: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

/// The proxies between every ordered pair of brokers.
pub struct Proxies {
    proxies: Vec<Proxy>,
}

impl Proxies {
    /// Starts a proxy for every ordered pair of distinct brokers, forwarding to `targets[to]`.
    pub async fn start(targets: &[SocketAddr]) -> Proxies {
        let mut proxies = Vec::new();
        for (from, _) in targets.iter().enumerate() {
            for (to, target) in targets.iter().enumerate() {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("a proxy binds a loopback port");
                let addr = listener.local_addr().expect("a bound listener has an address");
                let (blocked, _) = watch::channel(false);
                let accept_loop = tokio::spawn(accept(listener, *target, blocked.clone()));
                proxies.push(Proxy { from, to, addr, blocked, accept_loop });
            }
        }
        Proxies { proxies }
    }

    /// The address broker `from` must use to reach broker `to`.
    pub fn addr(&self, from: usize, to: usize) -> SocketAddr {
        self.proxies.iter().find(|p| p.from == from && p.to == to).expect("a proxy exists for every pair").addr
    }

    /// Cuts every path into and out of broker `node`.
    pub fn isolate(&self, node: usize) {
        for proxy in self.proxies.iter().filter(|p| p.from == node || p.to == node) {
            proxy.blocked.send_if_modified(|blocked| !std::mem::replace(blocked, true));
        }
    }

    /// Restores every path.
    pub fn heal(&self) {
        for proxy in &self.proxies {
            proxy.blocked.send_if_modified(|blocked| std::mem::replace(blocked, false));
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for proxy in &self.proxies {
            proxy.accept_loop.abort();
        }
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, blocked: watch::Sender<bool>) {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(carry(inbound, target, blocked.subscribe()));
            }
            // Out of file descriptors or similar: let the other tasks run before trying again.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// Forwards or black-holes one connection, depending on the state when it was opened, until that
/// state changes or either side closes.
async fn carry(mut inbound: TcpStream, target: SocketAddr, mut state: watch::Receiver<bool>) {
    let blocked = *state.borrow_and_update();
    let work = async {
        if blocked {
            let mut discard = [0u8; 16 * 1024];
            while matches!(inbound.read(&mut discard).await, Ok(n) if n > 0) {}
        } else if let Ok(mut outbound) = TcpStream::connect(target).await {
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        }
    };
    tokio::select! {
        _ = work => {}
        // A changed state, or the proxy being dropped, ends the connection.
        _ = state.changed() => {}
    }
}
