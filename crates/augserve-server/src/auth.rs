//! Access control for shared pools: bearer tokens, checked by a gRPC interceptor (a tower layer
//! in front of the AugServe and reflection services; health stays open so probes need no
//! secret), and TLS on the TCP listener.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::ServerError;

/// Accepts requests carrying `authorization: Bearer <token>` for one of the configured tokens;
/// with no tokens configured it accepts everything.
#[derive(Clone, Default)]
pub struct TokenCheck {
    /// SHA-256 of each accepted token: comparing fixed-size digests in constant time leaks
    /// neither the tokens' contents nor their lengths through timing.
    digests: Option<Arc<Vec<[u8; 32]>>>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl TokenCheck {
    pub fn new(tokens: &[String]) -> Self {
        let digests: Vec<[u8; 32]> = tokens
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| digest(t.as_bytes()))
            .collect();
        TokenCheck {
            digests: (!digests.is_empty()).then(|| Arc::new(digests)),
        }
    }

    pub fn enabled(&self) -> bool {
        self.digests.is_some()
    }

    /// The interceptor.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(digests) = &self.digests else {
            return Ok(req);
        };
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <token>\""))?;
        let d = digest(token.trim().as_bytes());
        // Every configured token is compared, whatever matches first.
        let ok = digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&d));
        if bool::from(ok) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    }
}

/// Tokens from a file: one per line; blank lines and `#` comments are ignored.
pub fn read_tokens_file(path: &Path) -> Result<Vec<String>, ServerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ServerError::Config(format!("tokens_file {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// The TLS identity for the TCP listener, from PEM files.
pub fn tls_config(
    cert: &Path,
    key: &Path,
) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| ServerError::Config(format!("{what} {}: {e}", p.display())))
    };
    let identity =
        tonic::transport::Identity::from_pem(read(cert, "tls_cert")?, read(key, "tls_key")?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn tokens_are_checked() {
        let open = TokenCheck::new(&[]);
        assert!(!open.enabled() && open.check(req(None)).is_ok());
        let c = TokenCheck::new(&["s3cret".into(), "other-token".into()]);
        assert!(c.check(req(Some("Bearer s3cret"))).is_ok());
        assert!(c.check(req(Some("Bearer other-token"))).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer "),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let e = c.check(req(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn token_files_skip_comments_and_blanks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "# trainers\nabc\n\n  def  \n").unwrap();
        assert_eq!(read_tokens_file(&p).unwrap(), vec!["abc", "def"]);
        assert!(read_tokens_file(&dir.path().join("missing")).is_err());
    }
}
