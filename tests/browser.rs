//! The lobby page in real, headless Chromium (driven over WebDriver with
//! fantoccini): two pages and one text TCP client chat in one room, a page
//! refuses a line over the server's `--max-line` itself (a warning, the text
//! kept, the connection untouched), a page shows the TCP client's
//! `QUIT … reset` when it is reset, and the pages reconnect after the server
//! restarts. A screenshot of a page is saved as
//! `target/screenshots/lobby.png`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run`
//! installs them). Without them the test is skipped, saying why; under
//! `CI=true` a missing browser is a failure.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, READ_TIMEOUT, Server};
use fantoccini::{ClientBuilder, Locator};
use futures::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show what the server sent it.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// The server's `--max-line`: small, so an over-long line is quick to type.
const MAX_LINE: &str = "256";
/// What a `say` command's JSON adds to its text: `{"cmd":"say","text":""}`.
const SAY_OVERHEAD: usize = r#"{"cmd":"say","text":""}"#.len();

/// A chromedriver process of this test, stopped (by its PID) on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        // A free port: bind, read, release (chromedriver binds it next).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READ_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the browser is installed; `false` means skip (never under CI).
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} not installed (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true and {why}");
    }
    eprintln!("skipping the browser test: {why}");
    false
}

/// `target/`, where screenshots and browser profiles go.
fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map_or(tmp.clone(), Path::to_path_buf)
}

/// A fresh headless Chromium with a profile of its own.
async fn browser(driver: &Driver, profile: &Path) -> fantoccini::Client {
    let _ = std::fs::remove_dir_all(profile);
    std::fs::create_dir_all(profile).expect("profile directory");
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-quic".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1100,700".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({"binary": CHROMIUM, "args": args}),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Evaluates `expression` in the page until it is true (bounded).
async fn wait_until(page: &fantoccini::Client, expression: &str, what: &str) {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    let script = format!("return Boolean({expression});");
    loop {
        let value = page.execute(&script, Vec::new()).await.expect("script");
        if value == Value::Bool(true) {
            return;
        }
        if Instant::now() >= deadline {
            let log = page
                .execute("return document.body.innerText;", Vec::new())
                .await
                .unwrap_or_default();
            panic!("page never showed {what} within {PAGE_TIMEOUT:?}; it shows:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Types `text` into the input `id` and presses its button `button`.
async fn submit(page: &fantoccini::Client, id: &str, text: &str, button: &str) {
    let input = page.find(Locator::Id(id)).await.expect("input");
    input.clear().await.expect("clear");
    input.send_keys(text).await.expect("type");
    page.find(Locator::Id(button))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
}

/// The log of the page contains a line with exactly `text`.
fn log_has(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#log div')].some(d => d.textContent === {})",
        json!(text)
    )
}

/// The member list of the page is exactly `nicks`, in order.
fn members_are(nicks: &[&str]) -> String {
    format!(
        "JSON.stringify([...document.querySelectorAll('#members li')].map(l => l.textContent)) === {}",
        json!(json!(nicks).to_string())
    )
}

/// Joins a page to `room` as `nick`.
async fn enter(page: &fantoccini::Client, http: SocketAddr, nick: &str, room: &str) {
    page.goto(&format!("http://{http}/"))
        .await
        .expect("open the page");
    wait_until(
        page,
        "document.getElementById('status').textContent === 'connected'",
        "connected",
    )
    .await;
    submit(page, "nick", nick, "set-nick").await;
    wait_until(
        page,
        &format!("document.getElementById('me').textContent === 'you are {nick}'"),
        "the nick",
    )
    .await;
    submit(page, "room", room, "join").await;
    wait_until(
        page,
        &log_has(&format!("{nick} joined {room}")),
        "its own join",
    )
    .await;
}

/// Evaluates `expression` in the page once.
async fn eval(page: &fantoccini::Client, expression: &str) -> Value {
    page.execute(&format!("return {expression};"), Vec::new())
        .await
        .expect("script")
}

/// A line whose `say` command is over the server's limit in UTF-8 bytes,
/// though not in characters, is refused by `ann`'s page before it is sent:
/// a warning says so, the text stays in the input, and the WebSocket stays
/// the same one (the server would close it with 1009, and the page would
/// reconnect). A line exactly at the limit is then sent.
async fn over_long_line_is_refused_by_the_page(ann: &fantoccini::Client, tex: &mut Client) {
    let limit: usize = MAX_LINE.parse().unwrap();
    eval(ann, "window.firstSocket = state.ws").await;
    // 2 bytes a character: 120 characters, 240 bytes, 263 as sent.
    let long = "é".repeat(120);
    let sent_bytes = long.len() + SAY_OVERHEAD;
    assert!(long.chars().count() < limit && sent_bytes > limit);
    submit(ann, "text", &long, "send").await;
    let warning = format!(
        "Not sent: {sent_bytes} bytes as sent, over the server's limit of {limit}. \
         Shorten it and send again."
    );
    let shown = format!(
        "(w => w !== null && w.textContent === {} && !w.hidden && w.offsetParent !== null)\
         (document.getElementById('warning'))",
        json!(warning)
    );
    wait_until(ann, &shown, "the warning").await;
    assert_eq!(
        eval(ann, "document.getElementById('text').value").await,
        json!(long)
    );
    // Nothing reached the room, and the connection is the one it was.
    tex.expect_nothing_pending();
    assert_eq!(
        eval(
            ann,
            "state.ws === window.firstSocket && state.ws.readyState === WebSocket.OPEN"
        )
        .await,
        json!(true)
    );
    assert_eq!(
        eval(ann, "document.getElementById('status').textContent").await,
        json!("connected")
    );

    // Exactly the limit is sent, and clears the input and the warning.
    let exact = "x".repeat(limit - SAY_OVERHEAD);
    submit(ann, "text", &exact, "send").await;
    tex.expect(&format!("MSG hall ann {exact}"));
    wait_until(
        ann,
        "document.getElementById('warning').hidden && document.getElementById('text').value === ''",
        "the warning gone",
    )
    .await;
    assert_eq!(
        eval(ann, "state.ws === window.firstSocket").await,
        json!(true)
    );
}

async fn scenario(ann: &fantoccini::Client, ben: &fantoccini::Client) {
    let server = Server::start(&["--http-bind", "127.0.0.1:0", "--max-line", MAX_LINE]);
    let http = server.listener_addr("http");

    enter(ann, http, "ann", "hall").await;
    enter(ben, http, "ben", "hall").await;
    wait_until(ann, &members_are(&["ann", "ben"]), "ben in the member list").await;

    let mut tex = server.named("tex");
    tex.send("/join hall");
    tex.expect("JOIN hall tex");
    tex.expect("WHO hall ann ben tex");
    for page in [ann, ben] {
        wait_until(
            page,
            &members_are(&["ann", "ben", "tex"]),
            "tex in the member list",
        )
        .await;
    }

    tex.send("hello pages");
    tex.expect("MSG hall tex hello pages");
    for page in [ann, ben] {
        wait_until(page, &log_has("tex: hello pages"), "tex's line").await;
    }
    submit(ann, "text", "hi tex", "send").await;
    tex.expect("MSG hall ann hi tex");
    wait_until(ben, &log_has("ann: hi tex"), "ann's line").await;
    over_long_line_is_refused_by_the_page(ann, &mut tex).await;
    submit(ben, "text", "/msg tex psst", "send").await;
    tex.expect("PRIVMSG ben tex psst");
    wait_until(
        ben,
        &log_has("[private] ben → tex: psst"),
        "the private line",
    )
    .await;
    wait_until(
        ann,
        "document.querySelector('#rooms li .count')?.textContent === '3'",
        "hall=3",
    )
    .await;

    // The TCP client is reset: the pages show its QUIT with the reason.
    tex.reset();
    for page in [ann, ben] {
        let quit = "document.querySelector('#log .quit[data-nick=\"tex\"][data-reason=\"reset\"]')";
        wait_until(page, quit, "tex's QUIT reset").await;
        wait_until(page, &log_has("QUIT hall tex reset"), "the QUIT line").await;
        wait_until(
            page,
            &members_are(&["ann", "ben"]),
            "tex gone from the members",
        )
        .await;
    }

    let dir = target_dir().join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let png = ann.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join("lobby.png"), &png).expect("save the screenshot");

    // The server restarts on the same port: the pages reconnect with
    // back-off, take their nicks again and rejoin their room.
    let mut server = server;
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(READ_TIMEOUT).success());
    for page in [ann, ben] {
        wait_until(
            page,
            "document.getElementById('status').className === 'reconnecting'",
            "reconnecting",
        )
        .await;
    }
    let http_arg = http.to_string();
    let restarted = Server::start(&["--http-bind", &http_arg, "--max-line", MAX_LINE]);
    assert_eq!(restarted.listener_addr("http"), http);
    for page in [ann, ben] {
        wait_until(
            page,
            "document.getElementById('status').textContent === 'connected'",
            "connected again",
        )
        .await;
    }
    // Both are back in the room: a new text client sees them there.
    let deadline = Instant::now() + PAGE_TIMEOUT;
    let mut probe: Client = restarted.named("probe");
    loop {
        probe.send("/who hall");
        let who = probe.line();
        if who == "WHO hall ann ben" || who == "WHO hall ben ann" {
            break;
        }
        assert!(Instant::now() < deadline, "the pages never rejoined: {who}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sorted = "JSON.stringify([...document.querySelectorAll('#members li')].map(l => l.textContent).sort()) === '[\"ann\",\"ben\"]'";
    wait_until(ann, sorted, "the member list after the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_and_a_tcp_client_chat_and_the_pages_reconnect() {
    if !browser_available() {
        return;
    }
    let driver = Driver::start();
    let profiles = target_dir().join(format!("browser-profiles-{}", std::process::id()));
    let ann = browser(&driver, &profiles.join("ann")).await;
    let ben = browser(&driver, &profiles.join("ben")).await;
    let outcome = AssertUnwindSafe(scenario(&ann, &ben)).catch_unwind().await;
    // The browsers end with their sessions, whatever happened.
    let _ = ann.close().await;
    let _ = ben.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profiles);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let screenshot = target_dir().join("screenshots").join("lobby.png");
    assert!(screenshot.exists(), "{} saved", screenshot.display());
}
