//! Which CAs the sidecar trusts tokenvend-sts with, and following a CA rotation.
//!
//! The webhook gives each pod the exchange CA bundle of its admission, in an env var that never
//! changes. When the certs job rotates the CA, tokenvend-sts's serving certificate moves to the
//! new CA after an overlap, and a pod older than that could no longer refresh. So after each
//! refresh the sidecar asks tokenvend-sts for the bundle it serves (`GET /ca-bundle`), on a new
//! connection its current bundle authenticates, and takes a changed one only when that bundle
//! trusts the certificate the server presented there: a wrong file on the server can never cut
//! the pod off. The bundle taken is kept in the shared volume, so a restarted container (whose
//! env still holds the admission's bundle) starts from it.

use std::path::{Path, PathBuf};

use tokenvend_core::FailureLatch;
use tokenvend_core::contract::files;
use tokenvend_core::{cabundle, limited};

use crate::exchange::{CaBundle, Exchanger};

/// What to do with the bundle tokenvend-sts serves.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// The bundle in use: nothing to do.
    Same,
    /// A different bundle that trusts the server: use it from now on.
    Adopt,
    /// A different bundle that cannot be used, and why.
    Refuse(String),
}

/// Judge the bundle `offered` by the server at `host`, which presented `server_cert` (DER) on
/// the connection that carried it, against the bundle `in_use`.
pub fn judge(in_use: &[u8], offered: &[u8], server_cert: Option<&[u8]>, host: &str) -> Offer {
    if offered == in_use {
        return Offer::Same;
    }
    let Some(cert) = server_cert else {
        return Offer::Refuse("the answer came without a server certificate to check".into());
    };
    match cabundle::trusts(offered, cert, host) {
        Ok(()) => Offer::Adopt,
        Err(e) => Offer::Refuse(e),
    }
}

/// The bundle to start with: the one a previous run took from tokenvend-sts, when there is one
/// and it is usable, else `admitted` (the pod's own). `None` (the system roots) is kept as is:
/// a public CA needs no following.
pub fn initial(out_dir: &Path, admitted: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let admitted = admitted?;
    let path = out_dir.join(files::EXCHANGE_CA);
    match limited::read(&path, cabundle::MAX_BYTES) {
        Ok(pem) if pem == admitted => Some(admitted),
        Ok(pem) => match cabundle::certificates(&pem) {
            Ok(_) => {
                tracing::info!(file = %path.display(), "trusting the exchange CA bundle a previous run took from tokenvend-sts");
                Some(pem)
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring the kept exchange CA bundle; using the pod's");
                Some(admitted)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(admitted),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the kept exchange CA bundle; using the pod's");
            Some(admitted)
        }
    }
}

/// Keep `pem` for the next start of the container.
pub fn keep(out_dir: &Path, pem: &[u8], mode: u32) -> std::io::Result<()> {
    tokenvend_core::atomic::write_atomic(out_dir, files::EXCHANGE_CA, pem, mode)
}

/// Follows the bundle tokenvend-sts serves, one look after each refresh.
pub struct Follower {
    in_use: Vec<u8>,
    out_dir: PathBuf,
    file_mode: u32,
    failure: FailureLatch,
    told_not_served: bool,
}

impl Follower {
    /// Following from `in_use`, the bundle the exchanger trusts now.
    pub fn new(in_use: Vec<u8>, out_dir: PathBuf, file_mode: u32) -> Self {
        Follower {
            in_use,
            out_dir,
            file_mode,
            failure: FailureLatch::default(),
            told_not_served: false,
        }
    }

    /// Ask for the served bundle and trust it from now on when [`judge`] says so. Failures are
    /// logged when they start or change, never fatal: the bundle in use stays.
    pub async fn look(&mut self, exchanger: &mut Exchanger) {
        let outcome = match exchanger.fetch_ca_bundle().await {
            Ok(CaBundle::NotServed) => {
                if !self.told_not_served {
                    self.told_not_served = true;
                    tracing::info!(
                        "tokenvend-sts serves no CA bundle (GET /ca-bundle: 404); after a CA rotation this pod must be restarted within the overlap"
                    );
                }
                return;
            }
            Ok(CaBundle::Served { pem, server_cert }) => {
                match judge(&self.in_use, &pem, server_cert.as_deref(), exchanger.host()) {
                    Offer::Same => Ok(()),
                    Offer::Adopt => self.adopt(pem, exchanger),
                    Offer::Refuse(why) => Err(format!("not taking the CA bundle it serves: {why}")),
                }
            }
            Err(e) => Err(format!("GET /ca-bundle failed: {e}")),
        };
        match outcome {
            Ok(()) => {
                if self.failure.recovered() {
                    tracing::info!("the CA bundle tokenvend-sts serves is usable again");
                }
            }
            Err(e) => {
                if self.failure.failed(e.clone()) {
                    tracing::warn!(error = %e, "keeping the exchange CA bundle in use");
                }
            }
        }
    }

    fn adopt(&mut self, pem: Vec<u8>, exchanger: &mut Exchanger) -> Result<(), String> {
        exchanger.trust(&pem)?;
        let certificates = cabundle::certificates(&pem).map_or(0, |c| c.len());
        tracing::info!(
            certificates,
            "now trusting the exchange CA bundle tokenvend-sts serves"
        );
        if let Err(e) = keep(&self.out_dir, &pem, self.file_mode) {
            // Trusted in memory all the same; only a restart of this container would lose it.
            tracing::warn!(error = %e, "could not keep the exchange CA bundle in the shared volume");
        }
        self.in_use = pem;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenvend_testkit::tls;

    #[test]
    fn a_changed_bundle_is_adopted_only_when_it_trusts_the_server_that_sent_it() {
        let (old, _, old_issuer) = tls::ca("old");
        let (new, _, new_issuer) = tls::ca("new");
        let from_old = tls::leaf(&old, &old_issuer).cert_der;
        let from_new = tls::leaf(&new, &new_issuer).cert_der;
        let both = format!("{}{}", new.pem(), old.pem());
        let (old, new) = (old.pem(), new.pem());
        let judge = |in_use: &str, offered: &str, cert: Option<&[u8]>| {
            judge(in_use.as_bytes(), offered.as_bytes(), cert, "localhost")
        };
        // The rotation as the certs job runs it: the new CA added, the server moved, the old dropped.
        assert_eq!(judge(&old, &both, Some(&from_old)), Offer::Adopt);
        assert_eq!(judge(&both, &both, Some(&from_new)), Offer::Same);
        assert_eq!(judge(&both, &new, Some(&from_new)), Offer::Adopt);
        assert_eq!(judge(&old, &old, None), Offer::Same);
        // A bundle that would not trust the server that sent it: kept out.
        let refused = |r: Offer| match r {
            Offer::Refuse(why) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused(judge(&old, &new, Some(&from_old))).contains("not trusted"));
        assert!(refused(judge(&old, "junk", Some(&from_old))).contains("no PEM certificate"));
        assert!(refused(judge(&old, &both, None)).contains("without a server certificate"));
    }

    #[test]
    fn a_start_uses_the_kept_bundle_when_usable_and_the_pods_otherwise() {
        let dir = tempfile::tempdir().expect("tmp");
        let admitted = b"admitted".to_vec();
        let pod = Some(admitted.clone());
        assert_eq!(initial(dir.path(), pod.clone()), pod, "nothing kept");
        assert_eq!(initial(dir.path(), None), None, "system roots");
        let (ca, _, _) = tls::ca("new");
        keep(dir.path(), ca.pem().as_bytes(), 0o644).expect("keep");
        assert_eq!(
            initial(dir.path(), pod.clone()),
            Some(ca.pem().into_bytes())
        );
        assert_eq!(initial(dir.path(), None), None, "system roots stay");
        keep(dir.path(), b"garbage", 0o644).expect("keep");
        assert_eq!(initial(dir.path(), pod.clone()), pod, "unusable: the pod's");
    }
}
