//! `embed plot --out map.html` in a real browser: headless Chromium driven over the DevTools
//! protocol (CDP) with real mouse and key events. The page loads from the file with no console
//! error and no network request, draws every point, hover shows the point's id and text, a
//! click pins it, legend entries hide their points, search finds ids and text, 3D rotates, and a
//! problem text holding `</script><script>alert(1)</script>` stays text.
//!
//! Chromium: `scripts/install-chromium.sh` (Debian's package), or `EXEMPLAR_CHROMIUM=/path`.
//! Without one the browser tests print why and pass as skipped, unless
//! `EXEMPLAR_REQUIRE_BROWSER` is set (CI sets it): then a missing browser fails them.

use crate::util::*;
use exemplar::plot::{self, HighlightSpec, Method, PlotConfig, Source};
use exemplar::progress::Silent;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const HOSTILE: &str =
    "Evil </script><script>alert(1)</script> <img src=x onerror=alert(2)> <!-- & \u{2028} done";

// ---- the browser ------------------------------------------------------------------------------

/// Chromium's path: $EXEMPLAR_CHROMIUM, else the usual names on PATH.
fn find_browser() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EXEMPLAR_CHROMIUM") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome-stable",
        "google-chrome",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The browser, or None (printed) when there is none and none is required.
fn browser_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(p) = find_browser() {
        return Some(p);
    }
    let required =
        std::env::var("EXEMPLAR_REQUIRE_BROWSER").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "EXEMPLAR_REQUIRE_BROWSER is set but no Chromium was found: run scripts/install-chromium.sh \
         or set EXEMPLAR_CHROMIUM=/path/to/chromium"
    );
    eprintln!(
        "SKIPPED {test}: no Chromium found (scripts/install-chromium.sh installs it; \
         set EXEMPLAR_REQUIRE_BROWSER=1 to fail instead of skipping)"
    );
    None
}

/// A headless Chromium with one page, attached over CDP (one websocket, flat sessions).
struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Every event received, in order.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(exe: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--headless=new",
                "--no-sandbox", // CI runs as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--mute-audio",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--window-size=1280,860",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr; keep
        // draining stderr afterwards so the browser never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("{} printed no DevTools address in 60 s", exe.display());
            }
        };
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connecting to DevTools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        let target = b.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Runtime", "Log", "Page", "Network"] {
            b.call(&format!("{domain}.enable"), json!({}));
        }
        b
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> u64 {
        self.next_id += 1;
        let mut msg = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("sending to DevTools");
        self.next_id
    }

    /// Wait for the answer to `id`, keeping the events that arrive meanwhile. A JavaScript
    /// dialog (alert) is recorded and dismissed, so a page that opens one cannot hang the test.
    fn answer(&mut self, id: u64, method: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method} in 60 s");
            let msg = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("DevTools connection: {e}"),
            };
            let v: Value = serde_json::from_str(msg.as_str()).unwrap();
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("{method}: {err}");
                }
                return v["result"].clone();
            }
            if v.get("method").and_then(Value::as_str) == Some("Page.javascriptDialogOpening") {
                let s = v["sessionId"].as_str().map(String::from);
                self.send(
                    "Page.handleJavaScriptDialog",
                    json!({"accept": true}),
                    s.as_deref(),
                );
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params, None);
        self.answer(id, method)
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        let id = self.send(method, params, Some(&session));
        self.answer(id, method)
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Poll `expr` until it is truthy; its value.
    fn wait_for(&mut self, expr: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(expr);
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "waited 30 s for {what} ({expr})");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open `path` and wait for the map's ready flag; milliseconds from navigation start to
    /// ready, as the page measured them.
    fn open(&mut self, path: &Path) -> f64 {
        let url = file_url(path);
        self.call("Page.navigate", json!({"url": url}));
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = "window.exemplarMap !== undefined && window.exemplarMap.ready === true";
        while self.eval(ready) != json!(true) {
            // A page that failed (a parse error, a broken data blob) never gets ready: say why.
            assert!(
                self.errors().is_empty(),
                "{}: {:?}",
                path.display(),
                self.errors()
            );
            assert!(
                Instant::now() < deadline,
                "{}: not ready after 30 s",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.eval("window.exemplarMap.readyMs").as_f64().unwrap()
    }

    fn mouse(&mut self, kind: &str, (x, y): (f64, f64), extra: Value) {
        let mut p = json!({"type": kind, "x": x, "y": y});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        self.call("Input.dispatchMouseEvent", p);
    }

    fn hover(&mut self, at: (f64, f64)) {
        self.mouse("mouseMoved", at, json!({}));
    }

    fn click(&mut self, at: (f64, f64)) {
        self.mouse("mouseMoved", at, json!({}));
        let press = json!({"button": "left", "buttons": 1, "clickCount": 1});
        self.mouse("mousePressed", at, press.clone());
        self.mouse("mouseReleased", at, press);
    }

    fn drag(&mut self, from: (f64, f64), to: (f64, f64)) {
        let held = json!({"button": "left", "buttons": 1, "clickCount": 1});
        self.mouse("mouseMoved", from, json!({}));
        self.mouse("mousePressed", from, held.clone());
        for k in 1..=8 {
            let t = k as f64 / 8.0;
            let at = (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t);
            self.mouse("mouseMoved", at, json!({"button": "left", "buttons": 1}));
        }
        self.mouse("mouseReleased", to, held);
    }

    fn wheel(&mut self, at: (f64, f64), delta_y: f64) {
        self.mouse(
            "mouseWheel",
            at,
            json!({"deltaX": 0, "deltaY": delta_y, "pointerType": "mouse"}),
        );
    }

    /// Client coordinates of point `i` and whether the last frame drew it.
    fn point(&mut self, i: u64) -> ((f64, f64), bool) {
        let v = self.eval(&format!("window.exemplarMap.screenOf({i})"));
        (
            (v["x"].as_f64().unwrap(), v["y"].as_f64().unwrap()),
            v["drawn"].as_bool().unwrap(),
        )
    }

    /// The centre of the first element matching a CSS selector, in client coordinates.
    fn centre_of(&mut self, selector: &str) -> (f64, f64) {
        let sel = serde_json::to_string(selector).unwrap();
        let v = self.eval(&format!(
            "(() => {{ const r = document.querySelector({sel}).getBoundingClientRect(); \
             return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        ));
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
    }

    fn tooltip(&mut self) -> String {
        self.eval("window.exemplarMap.tooltipText()")
            .as_str()
            .unwrap()
            .to_string()
    }

    fn int(&mut self, expr: &str) -> u64 {
        let v = self.eval(expr);
        v.as_u64().unwrap_or_else(|| panic!("{expr} = {v}"))
    }

    /// Console errors, uncaught exceptions and error log entries (CSP violations, failed
    /// loads) so far.
    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => Some(p["exceptionDetails"].to_string()),
                    "Runtime.consoleAPICalled"
                        if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                    {
                        Some(p["args"].to_string())
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => {
                        Some(p["entry"].to_string())
                    }
                    _ => None,
                }
            })
            .collect()
    }

    fn dialogs(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Page.javascriptDialogOpening")
            .map(|e| e["params"].to_string())
            .collect()
    }

    /// URLs the page requested.
    fn requests(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .map(|e| e["params"]["request"]["url"].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait until the page has painted two more frames (what a drag or wheel scheduled).
    fn frame(&mut self) {
        self.eval("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))");
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = decode_base64(r["data"].as_str().unwrap());
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn file_url(path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap();
    let mut url = String::from("file://");
    for b in abs.to_str().unwrap().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                url.push(b as char)
            }
            _ => url.push_str(&format!("%{b:02X}")),
        }
    }
    url
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut v = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            v |= val(c) << (18 - 6 * k);
        }
        out.extend_from_slice(&v.to_be_bytes()[1..chunk.len()]);
    }
    out
}

// ---- data ---------------------------------------------------------------------------------

/// One record of a synthetic extraction.
struct Rec {
    id: String,
    problem: String,
    subject: String,
    source: String,
}

const SUBJECTS: [&str; 5] = [
    "Algebra",
    "Geometry",
    "Number Theory",
    "Precalculus",
    "Counting",
];

/// `n` records in `SUBJECTS.len()` clusters with ~`text_len`-character problems; record 3 holds
/// the hostile text.
fn synthetic(n: usize, text_len: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let subject = SUBJECTS[i % SUBJECTS.len()];
            let mut problem =
                format!("Problem {i} about {subject}: find the value of x_{i} where ");
            while problem.len() < text_len {
                problem.push_str("x^2 + 3x - 10 = 0 and y > x; ");
            }
            if i == 3 {
                problem = HOSTILE.to_string();
            }
            Rec {
                id: format!("p{i}"),
                problem,
                subject: subject.to_string(),
                source: if i % 7 == 0 { "aime" } else { "math" }.to_string(),
            }
        })
        .collect()
}

fn synthetic_extraction(dir: &Path, n: usize, dim: usize, text_len: usize) -> Vec<Rec> {
    let recs = synthetic(n, text_len);
    let vectors = clustered(n, dim, SUBJECTS.len(), 0.5, 7);
    write_extraction(dir, &vectors, |i| {
        let r = &recs[i];
        let fields = json!({"problem": r.problem, "subject": r.subject, "source": r.source});
        (r.id.clone(), fields)
    });
    recs
}

fn map(source: Source, out: &Path, dims: usize, method: Method) -> plot::PlotSummary {
    let cfg = PlotConfig {
        source,
        method,
        dims,
        color_by: Some("subject".into()),
        outputs: vec![out.to_path_buf()],
        sample: 1_000_000,
        ..Default::default()
    };
    plot::plot(&cfg, &Silent).unwrap()
}

/// A point whose screen position is at least 6 pixels from every other drawn point, so the
/// mouse there (events land on whole pixels) can only mean that point.
const ISOLATED: &str = "((gap) => { const m = window.exemplarMap; const P = []; \
  for (let i = 0; i < m.points; i++) P.push(m.screenOf(i)); \
  for (let i = 0; i < P.length; i++) { if (!P[i].drawn) continue; let ok = true; \
    for (let j = 0; j < P.length && ok; j++) if (j !== i && P[j].drawn && \
      Math.hypot(P[j].x - P[i].x, P[j].y - P[i].y) < gap) ok = false; \
    if (ok) return i; } return -1; })(6)";

// ---- tests --------------------------------------------------------------------------------

#[test]
fn html_file_is_self_contained_escaped_and_written_beside_png_and_svg() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    synthetic_extraction(&emb, 400, 16, 600);
    let out = tmp.path().join("maps/m.png");
    let title = "T </title><script>alert(3)</script>";
    embed_ok(&[
        "plot",
        "--embeddings",
        emb.to_str().unwrap(),
        "--color-by",
        "subject",
        "--out",
        out.to_str().unwrap(),
        "--formats",
        "png,svg,html",
        "--title",
        title,
        "--quiet",
    ]);
    for ext in ["png", "svg", "html"] {
        assert!(tmp.path().join(format!("maps/m.{ext}")).is_file(), "{ext}");
    }
    let names = std::fs::read_dir(tmp.path().join("maps")).unwrap().count();
    assert_eq!(names, 3, "temporary files left");
    let html = std::fs::read_to_string(tmp.path().join("maps/m.html")).unwrap();
    // One inline stylesheet, the data and one inline script; nothing loaded from anywhere.
    assert_eq!(html.matches("<script").count(), 2);
    assert_eq!(html.matches("</script>").count(), 2);
    let data_at = html.find("id=\"exemplar-data\">").unwrap();
    let data_end = data_at + html[data_at..].find("</script>").unwrap();
    let page = format!("{}{}", &html[..data_at], &html[data_end..]);
    for external in [
        "src=", "href=", "<link", "<iframe", "@import", "url(", "http:", "https:",
    ] {
        assert!(!page.contains(external), "{external} in the page");
    }
    assert!(html.contains("default-src 'none'"), "no CSP");
    assert!(html.contains("<title>T &lt;/title&gt;&lt;script&gt;alert(3)&lt;/script&gt;</title>"));
    // The hostile text is in the data, escaped, and the texts are cut.
    assert!(!html.contains("alert(1)</script>"));
    assert!(html.contains("\\u003c/script\\u003e\\u003cscript\\u003ealert(1)"));
    assert!(!html.contains('\u{2028}'));
    let blob = &html[data_at + html[data_at..].find('>').unwrap() + 1..data_end];
    let data: Value = serde_json::from_str(blob).unwrap();
    assert_eq!(data["n"], 400);
    assert!(data["texts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.as_str().unwrap().chars().count() <= 301));
    assert!(data["texts"].as_array().unwrap().iter().any(|t| t
        .as_str()
        .unwrap()
        .contains(HOSTILE.split_whitespace().next().unwrap())));
    let fields: Vec<&str> = data["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["subject", "source"]);
    assert_eq!(data["text_field"], "problem");
    // Compact: 400 points of ~300 characters each stay well under 2 KB a point.
    assert!(html.len() < 400 * 600, "{} bytes", html.len());
}

#[test]
fn html_map_2d_loads_clean_draws_every_point_hovers_pins_toggles_and_searches() {
    let Some(exe) = browser_or_skip("html_map_2d") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    let recs = synthetic_extraction(&emb, 600, 24, 400);
    let out = tmp.path().join("map.html");
    let s = map(Source::Embeddings(emb), &out, 2, Method::Pca);
    let mut b = Browser::launch(&exe);
    b.open(&out);
    assert_eq!(b.int("window.exemplarMap.points"), 600);
    assert_eq!(b.int("window.exemplarMap.drawnPoints"), 600);

    // The page draws the true coordinates: screen x and y are one linear map of the
    // projection's x and y (within the u16 quantisation and a pixel).
    let page_xy: Vec<(f64, f64, String)> = (0..600u64)
        .map(|i| {
            let (at, _) = b.point(i);
            let id = b.eval(&format!("window.exemplarMap.idOf({i})"));
            (at.0, at.1, id.as_str().unwrap().to_string())
        })
        .collect();
    for axis in 0..2 {
        let pairs: Vec<(f64, f64)> = page_xy
            .iter()
            .map(|(x, y, id)| {
                let row = s.ids.iter().position(|i| i == id).unwrap();
                (
                    s.coords[[row, axis]] as f64,
                    if axis == 0 { *x } else { *y },
                )
            })
            .collect();
        let lo = pairs.iter().min_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
        let hi = pairs.iter().max_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
        let k = (hi.1 - lo.1) / (hi.0 - lo.0);
        for p in &pairs {
            let want = lo.1 + (p.0 - lo.0) * k;
            assert!((p.1 - want).abs() < 1.5, "axis {axis}: {} vs {want}", p.1);
        }
    }

    // Hover an isolated point: the tooltip names it, its subject, source and text.
    let i = b.int(ISOLATED);
    let id = b
        .eval(&format!("window.exemplarMap.idOf({i})"))
        .as_str()
        .unwrap()
        .to_string();
    let rec = recs.iter().find(|r| r.id == id).unwrap();
    let (at, drawn) = b.point(i);
    assert!(drawn);
    b.hover(at);
    let tip = b.tooltip();
    assert!(tip.starts_with(&id), "{tip:?} for {id}");
    assert!(tip.contains(&format!("subject: {}", rec.subject)), "{tip}");
    assert!(tip.contains(&format!("source: {}", rec.source)), "{tip}");
    let start: String = rec.problem.chars().take(60).collect();
    assert!(tip.contains(&start), "{tip}");
    assert!(!tip.contains("copy id"));
    // Away from every point: no tooltip.
    b.hover((2.0, 300.0)); // the left margin: no point there
    assert_eq!(b.tooltip(), "");
    // A click pins it, with "copy id"; the tooltip stays while the mouse moves on.
    b.click(at);
    assert_eq!(b.int("window.exemplarMap.pinned"), i);
    assert!(b.tooltip().contains("copy id"));
    b.hover((2.0, 300.0));
    assert!(b.tooltip().starts_with(&id));
    let spot = b.centre_of("#tooltip button.copy");
    b.click(spot);
    b.wait_for(
        "document.querySelector('#tooltip button.copy').textContent !== 'copy id'",
        "the copy button's answer",
    );
    let spot = b.centre_of("#tooltip button.close");
    b.click(spot);
    assert_eq!(b.tooltip(), "");

    // The legend hides a category's points and shows them again.
    let cat = b.int(&format!("window.exemplarMap.categoryOf({i})"));
    let count = b.int(&format!(
        "JSON.parse(document.getElementById('exemplar-data').textContent).legend[{cat}].count"
    ));
    let button = format!("#legend button[data-category=\"{cat}\"]");
    let spot = b.centre_of(&button);
    b.click(spot);
    b.wait_for(
        &format!("window.exemplarMap.drawnPoints === {}", 600 - count),
        "hidden points",
    );
    assert!(!b.point(i).1, "a hidden point is drawn");
    b.hover(at);
    assert_eq!(b.tooltip(), "", "a hidden point still has a tooltip");
    let spot = b.centre_of(&button);
    b.click(spot);
    b.wait_for("window.exemplarMap.drawnPoints === 600", "shown points");

    // Search: an id and a text match, typed into the box; Enter pins the match.
    b.eval("document.getElementById('search').focus()");
    b.call("Input.insertText", json!({"text": "p17"}));
    let want = recs
        .iter()
        .filter(|r| r.id.contains("p17") || r.problem.to_lowercase().contains("p17"))
        .count();
    b.wait_for(
        &format!("window.exemplarMap.matches === {want}"),
        "search matches",
    );
    b.call(
        "Input.dispatchKeyEvent",
        json!({"type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
    );
    let pinned = b.int("window.exemplarMap.pinned");
    let pid = b.eval(&format!("window.exemplarMap.idOf({pinned})"));
    assert!(pid.as_str().unwrap().contains("p17"), "{pid}");

    // Pan and zoom move the points on screen.
    b.eval("document.getElementById('search').value = ''; window.exemplarMap.search('')");
    let spot = b.centre_of("#tooltip button.close");
    b.click(spot);
    let before = b.point(i).0;
    b.drag((600.0, 400.0), (700.0, 450.0));
    b.frame();
    let after = b.point(i).0;
    let moved = (after.0 - before.0, after.1 - before.1);
    assert!(
        (moved.0 - 100.0).abs() < 1.0 && (moved.1 - 50.0).abs() < 1.0,
        "moved by {moved:?}"
    );
    b.wheel((600.0, 400.0), -500.0);
    b.wait_for(
        &format!(
            "Math.abs(window.exemplarMap.screenOf({i}).x - {}) > 2",
            after.0
        ),
        "zoom",
    );
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    assert_eq!(b.dialogs(), Vec::<String>::new());
    let url = file_url(&out);
    assert!(b.requests().iter().all(|u| *u == url), "{:?}", b.requests());
}

#[test]
fn html_map_shows_hostile_text_as_text_and_runs_no_injected_script() {
    let Some(exe) = browser_or_skip("html_map_hostile_text") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    synthetic_extraction(&emb, 200, 16, 200);
    let out = tmp.path().join("evil.html");
    let cfg = PlotConfig {
        source: Source::Embeddings(emb),
        color_by: Some("subject".into()),
        outputs: vec![out.clone()],
        title: Some("<img src=x onerror=alert(4)></title><script>alert(3)</script>".into()),
        highlight: Some(HighlightSpec::Ids(vec!["p3".into(), "p4".into()])),
        ..Default::default()
    };
    plot::plot(&cfg, &Silent).unwrap();
    let mut b = Browser::launch(&exe);
    b.open(&out);
    assert_eq!(b.int("window.exemplarMap.drawnPoints"), 200);
    // Find it by searching its text, pin it, read the tooltip.
    b.eval("document.getElementById('search').focus()");
    b.call(
        "Input.insertText",
        json!({"text": "</script><script>alert(1)"}),
    );
    b.wait_for("window.exemplarMap.matches === 1", "the hostile record");
    b.call(
        "Input.dispatchKeyEvent",
        json!({"type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
    );
    let tip = b.tooltip();
    assert!(tip.starts_with("p3"), "{tip}");
    assert!(
        tip.contains("</script><script>alert(1)</script> <img src=x onerror=alert(2)> <!-- &"),
        "{tip}"
    );
    // Hover shows the same text.
    let i = b.int("window.exemplarMap.indexOf('p3')");
    let spot = b.centre_of("#tooltip button.close");
    b.click(spot);
    let (at, _) = b.point(i);
    b.hover(at);
    assert!(b.tooltip().contains("alert(1)</script>"));
    // Nothing was parsed as markup: the page's own elements only, and no dialog.
    assert_eq!(b.int("document.scripts.length"), 2);
    assert_eq!(b.int("document.images.length"), 0);
    assert_eq!(b.int("document.querySelectorAll('#tooltip *').length"), 4);
    let title = b.eval("document.title");
    assert_eq!(
        title,
        "<img src=x onerror=alert(4)></title><script>alert(3)</script>"
    );
    assert_eq!(
        b.eval("document.getElementById('title').textContent"),
        title
    );
    std::thread::sleep(Duration::from_millis(300));
    b.eval("1");
    assert_eq!(b.dialogs(), Vec::<String>::new(), "a dialog opened");
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
}

#[test]
fn html_map_3d_rotates_zooms_and_hovers() {
    let Some(exe) = browser_or_skip("html_map_3d") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    synthetic_extraction(&emb, 500, 16, 100);
    let out = tmp.path().join("map3d.html");
    // PCA: UMAP-style pulls each synthetic cluster into a ball where no point stands alone.
    map(Source::Embeddings(emb), &out, 3, Method::Pca);
    let mut b = Browser::launch(&exe);
    b.open(&out);
    assert_eq!(b.int("window.exemplarMap.dims"), 3);
    assert_eq!(b.int("window.exemplarMap.drawnPoints"), 500);
    let i = b.int(ISOLATED);
    let id = b
        .eval(&format!("window.exemplarMap.idOf({i})"))
        .as_str()
        .unwrap()
        .to_string();
    let (at, _) = b.point(i);
    b.hover(at);
    assert!(b.tooltip().starts_with(&id), "{}", b.tooltip());
    // Dragging rotates: the point moves; the view stays whole.
    b.drag((500.0, 400.0), (620.0, 440.0));
    b.frame();
    let (moved, drawn) = b.point(i);
    assert!(drawn);
    assert!(
        (moved.0 - at.0).abs() + (moved.1 - at.1).abs() > 3.0,
        "{at:?} -> {moved:?}"
    );
    assert_eq!(b.int("window.exemplarMap.drawnPoints"), 500);
    // Hover works at the new angle.
    let j = b.int(ISOLATED);
    let jid = b
        .eval(&format!("window.exemplarMap.idOf({j})"))
        .as_str()
        .unwrap()
        .to_string();
    let (at, _) = b.point(j);
    b.hover(at);
    assert!(b.tooltip().starts_with(&jid), "{}", b.tooltip());
    // The wheel zooms in about the centre: points move away from it.
    let centre = b.centre_of("#map");
    let d0 = (at.0 - centre.0).hypot(at.1 - centre.1);
    b.wheel(centre, -400.0);
    b.wait_for(
        &format!(
            "(() => {{ const p = window.exemplarMap.screenOf({j}); \
             return Math.hypot(p.x - {}, p.y - {}) > {} * 1.3; }})()",
            centre.0, centre.1, d0
        ),
        "zoom in 3D",
    );
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
}

#[test]
fn html_map_draws_the_query_and_the_neighbours_index_query_returns() {
    let Some(exe) = browser_or_skip("html_map_query") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 120);
    let (emb, idx) = (tmp.path().join("emb"), tmp.path().join("idx"));
    extract(&tiny_llama(), &input, &emb, 8);
    build_index(&emb, &idx);
    let q = "How many positive divisors does 36 have?";
    let out = tmp.path().join("q.html");
    let summary: Value = serde_json::from_str(
        embed_ok(&[
            "plot",
            "--index",
            idx.to_str().unwrap(),
            "--color-by",
            "subject",
            "--highlight-query",
            q,
            "--k",
            "4",
            "--out",
            out.to_str().unwrap(),
            "--json",
            "--quiet",
        ])
        .0
        .trim(),
    )
    .unwrap();
    let mut b = Browser::launch(&exe);
    b.open(&out);
    assert_eq!(b.int("window.exemplarMap.drawnPoints"), 120);
    assert_eq!(
        b.eval("window.exemplarMap.highlighted"),
        summary["highlighted"]
    );
    let marks = b.eval("document.getElementById('marks').textContent");
    assert!(
        marks
            .as_str()
            .unwrap()
            .contains("query: How many positive divisors"),
        "{marks}"
    );
    assert!(
        marks.as_str().unwrap().contains("its 4 neighbours"),
        "{marks}"
    );
    // The tooltip of a ringed neighbour names it, with the sample's source field.
    let first = summary["highlighted"][0].as_str().unwrap();
    let i = b.int(&format!("window.exemplarMap.indexOf('{first}')"));
    let (at, _) = b.point(i);
    b.hover(at);
    let tip = b.tooltip();
    assert!(tip.starts_with(first), "{tip:?} for {first}");
    assert!(
        tip.contains("source: math") || tip.contains("source: gsm8k"),
        "{tip}"
    );
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
}

/// The scale target: 100,000 points open in under 3 s and a whole frame (what every pan or
/// rotation step repaints) takes a fraction of that, in 2D and 3D. Prints the numbers.
#[test]
fn html_map_of_100k_points_opens_in_under_3_s() {
    let Some(exe) = browser_or_skip("html_map_100k") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    synthetic_extraction(&emb, 100_000, 16, 300);
    let mut b = Browser::launch(&exe);
    for dims in [2, 3] {
        let out = tmp.path().join(format!("big{dims}d.html"));
        let s = map(Source::Embeddings(emb.clone()), &out, dims, Method::Pca);
        assert_eq!(s.points, 100_000);
        let bytes = std::fs::metadata(&out).unwrap().len();
        let wall = Instant::now();
        let ready_ms = b.open(&out);
        let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
        assert_eq!(b.int("window.exemplarMap.drawnPoints"), 100_000);
        let frame_ms = b.eval(FRAME_MS).as_f64().unwrap();
        let t = Instant::now();
        b.drag((500.0, 400.0), (560.0, 430.0));
        b.frame();
        let drag_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "100,000 points {dims}D: {:.1} MB, ready {ready_ms:.0} ms after navigation \
             ({wall_ms:.0} ms wall), full frame {frame_ms:.1} ms, 8-step drag over CDP {drag_ms:.0} ms",
            bytes as f64 / 1e6
        );
        assert!(ready_ms < 3000.0, "{dims}D: ready after {ready_ms} ms");
        assert!(frame_ms < 100.0, "{dims}D: a frame takes {frame_ms} ms");
    }
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
}

/// Milliseconds per full repaint (points and overlay), averaged over 10.
const FRAME_MS: &str = "(() => { const t = performance.now(); \
  for (let k = 0; k < 10; k++) window.exemplarMap.render(); \
  return (performance.now() - t) / 10; })()";

/// A tool, not a check: open the map at $EXEMPLAR_MAP_HTML, print its load time, and with
/// $EXEMPLAR_MAP_SCREENSHOT save a screenshot with the tooltip of the point at
/// $EXEMPLAR_MAP_HOVER (an id; default: an isolated point).
/// `EXEMPLAR_MAP_HTML=visualizations/sample-umap.html cargo nextest run --release
///  -E 'binary(it) & test(/^plot_html::/)' --run-ignored only --no-capture`
#[test]
#[ignore]
fn measure_and_screenshot_a_map() {
    let Some(path) = std::env::var_os("EXEMPLAR_MAP_HTML").map(PathBuf::from) else {
        eprintln!("set EXEMPLAR_MAP_HTML");
        return;
    };
    let exe = find_browser().expect("no Chromium");
    let mut b = Browser::launch(&exe);
    let wall = Instant::now();
    let ready_ms = b.open(&path);
    let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
    let points = b.int("window.exemplarMap.points");
    let frame_ms = b.eval(FRAME_MS).as_f64().unwrap();
    println!(
        "{}: {points} points, {:.2} MB, ready {ready_ms:.0} ms after navigation ({wall_ms:.0} ms wall), full frame {frame_ms:.1} ms",
        path.display(),
        std::fs::metadata(&path).unwrap().len() as f64 / 1e6
    );
    if let Some(shot) = std::env::var_os("EXEMPLAR_MAP_SCREENSHOT") {
        let i = match std::env::var("EXEMPLAR_MAP_HOVER") {
            Ok(id) => b.int(&format!("window.exemplarMap.indexOf({})", json!(id))),
            Err(_) => b.int(ISOLATED),
        };
        let (at, _) = b.point(i);
        b.hover(at);
        b.screenshot(Path::new(&shot));
    }
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
}
