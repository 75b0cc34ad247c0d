//! The shutdown cases against a real socket: a connection accepted just before the shutdown still gets its answer,
//! and one that never speaks is closed after the grace.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::{Draining, serve};

/// A listener that reports each connection it hands to the server, so a test knows the server holds it.
struct ReportingListener {
    inner: TcpListener,
    accepted: mpsc::UnboundedSender<()>,
}

impl axum::serve::Listener for ReportingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let accepted = self.inner.accept().await;
        let _ = self.accepted.send(());
        accepted.expect("accept on loopback")
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

struct Server {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<()>,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: tokio::task::JoinHandle<()>,
}

async fn start(grace: Duration) -> Server {
    let inner = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = inner.local_addr().expect("local addr");
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let router = Router::new().route("/", get(|| async { "answered" }));
    let listener = ReportingListener {
        inner,
        accepted: accepted_tx,
    };
    let stopped = tokio::spawn(serve(
        listener,
        router,
        Draining::default(),
        async {
            let _ = shutdown_rx.await;
        },
        grace,
    ));
    Server {
        addr,
        accepted,
        shutdown: Some(shutdown),
        stopped,
    }
}

impl Server {
    /// Connects and waits until the server has accepted the connection.
    async fn connect(&mut self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        self.accepted
            .recv()
            .await
            .expect("the server accepted the connection");
        stream
    }

    /// Starts the shutdown and waits until the server stopped accepting (a new connection is refused).
    async fn shut_down(&mut self) {
        let _ = self.shutdown.take().expect("shut down once").send(());
        while TcpStream::connect(self.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    }
}

async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_connection_accepted_before_the_shutdown_gets_its_answer() {
    let mut server = start(Duration::from_secs(30)).await;
    let mut stream = server.connect().await;
    server.shut_down().await;

    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("the connection is still open after the shutdown began");
    let answer = read_to_end(&mut stream).await;

    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer:?}"
    );
    assert!(answer.ends_with("answered"), "{answer:?}");
    server
        .stopped
        .await
        .expect("the server returned once the connection was answered");
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed_after_the_grace() {
    let grace = Duration::from_millis(300);
    let mut server = start(grace).await;
    let mut silent = server.connect().await;
    let began = Instant::now();
    server.shut_down().await;

    let answer = read_to_end(&mut silent).await;

    assert_eq!(answer, "", "closed without an answer");
    assert!(
        began.elapsed() >= grace,
        "closed after {:?}, before the grace of {grace:?}",
        began.elapsed()
    );
    server.stopped.await.expect("the server returned");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_once() {
    let mut server = start(Duration::from_secs(30)).await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("send");
    let mut first = [0u8; 17];
    stream
        .read_exact(&mut first)
        .await
        .expect("read the first answer's status line");
    assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");
    server.shut_down().await;

    // The grace is only for connections that have not spoken: this one is closed now, well within 30 s.
    let rest = tokio::time::timeout(Duration::from_secs(20), read_to_end(&mut stream)).await;
    assert!(
        rest.is_ok_and(|rest| rest.ends_with("answered")),
        "closed after its answer, not at the grace's end"
    );
    server.stopped.await.expect("the server returned");
}
