//! `wait`: the classic-style sidecar's postStart hook. The kubelet starts a pod's regular
//! containers one after another and starts the next only when the previous one's postStart
//! hook has finished, so the sidecar, placed first, holds the app back until its credentials
//! endpoint serves: no AWS call in the app's first seconds meets `connection refused`.

use std::time::Duration;

use tokenvend_core::contract::files;
use tokenvend_core::limited;

use crate::config::WaitArgs;
use crate::exchange::error_chain;
use crate::outputs;

/// How often the endpoint is asked.
const INTERVAL: Duration = Duration::from_millis(100);
/// The most of a refusal's body kept for the reason.
const MAX_BODY: usize = 1024;

/// Ok once `GET <listen><path>` with the pod's auth token answers 200; else, after the wait,
/// why not (with the last exchange failure, if any). Credentials answered are never read.
pub async fn until_served(a: &WaitArgs) -> Result<(), String> {
    // The pod's auth token goes with each request: never off the pod's own loopback.
    let listen = crate::serve::loopback_only(a.listen)?;
    crate::config::credentials_path_ok(&a.credentials_path)?;
    let url = format!("http://{listen}{}", a.credentials_path);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.wait_seconds);
    loop {
        // Each try ends by the deadline, so an endpoint that accepts and never answers cannot
        // stretch the wait.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let why = match ask(&client, &url, a, left.min(Duration::from_secs(2))).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if tokio::time::Instant::now() + INTERVAL >= deadline {
            return Err(outputs::with_last_failure(
                &a.out_dir,
                format!(
                    "the credentials endpoint {url} did not serve within {} s: {why}",
                    a.wait_seconds
                ),
            ));
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// One request: Ok on 200, else why not.
async fn ask(
    client: &reqwest::Client,
    url: &str,
    a: &WaitArgs,
    timeout: Duration,
) -> Result<(), String> {
    let token_file = a.out_dir.join(files::AUTH_TOKEN);
    let token = limited::read_to_string(&token_file, limited::MAX_BYTES)
        .map_err(|e| format!("auth-token file {}: {e}", token_file.display()))?;
    let mut response = client
        .get(url)
        .header(reqwest::header::AUTHORIZATION, token.trim())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    if status == reqwest::StatusCode::OK {
        return Ok(());
    }
    let mut body = Vec::new();
    // A body that trickles stops at the request's timeout too.
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_BODY);
    let said = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(format!("HTTP {}: {said}", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: &str, path: &str) -> WaitArgs {
        WaitArgs {
            out_dir: std::env::temp_dir(),
            listen: listen.parse().expect("address"),
            credentials_path: path.to_owned(),
            wait_seconds: 600,
        }
    }

    /// Refused at once: well within 5 s, where a wait would take 600.
    async fn refused(a: WaitArgs) -> String {
        tokio::time::timeout(Duration::from_secs(5), until_served(&a))
            .await
            .expect("refused at once, not after the wait")
            .expect_err("refused")
    }

    #[tokio::test]
    async fn the_token_is_never_sent_off_the_loopback_nor_to_a_bad_path() {
        let e = refused(args("10.0.0.1:9911", "/credentials")).await;
        assert!(e.contains("loopback"), "{e}");
        let e = refused(args("127.0.0.1:9911", "credentials")).await;
        assert!(e.contains("must start with /"), "{e}");
    }
}
