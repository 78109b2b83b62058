//! `sluice approve`: sign a token for a traffic document (SPEC §5's token table).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{EXIT_INVALID, EXIT_OK};
use crate::change::keys;
use crate::change::token::{Act, Claims, sign};
use crate::config::Dur;
use crate::config::traffic::{CheckContext, TrafficDoc};

/// `sluice approve` arguments.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The signer's private key (PKCS#8 PEM, as `sluice keygen` writes it).
    #[arg(long)]
    pub key: PathBuf,
    /// The signer's principal name (the `iss` claim).
    #[arg(long)]
    pub principal: String,
    /// The environment (`aud`): `trust.environment` of the sluice that will read it.
    #[arg(long)]
    pub env: String,
    /// What the token authorizes.
    #[arg(long, value_enum)]
    pub act: ActArg,
    /// `promote`: the rollout.
    #[arg(long, requires = "step")]
    pub rollout: Option<String>,
    /// `promote`: the index of the manual gate step (with `--full`: the rollout's current step).
    #[arg(long, requires = "rollout")]
    pub step: Option<u64>,
    /// `promote`: a full promotion (`sluice rollout promote --full`), claim `full: true`.
    #[arg(long, requires = "rollout")]
    pub full: bool,
    /// Lifetime, e.g. `24h` (at most `trust.policy.max_token_lifetime`).
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// The traffic document the token is for (for `revert`: the earlier document).
    pub traffic: PathBuf,
}

/// The `act` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActArg {
    /// Identifies the author of a change.
    Author,
    /// Counts toward `require`.
    Approve,
    /// Post-facto review of an emergency change.
    Review,
    /// Passes a manual gate of a rollout.
    Promote,
    /// Restores an earlier document.
    Revert,
}

impl From<ActArg> for Act {
    fn from(a: ActArg) -> Act {
        match a {
            ActArg::Author => Act::Author,
            ActArg::Approve => Act::Approve,
            ActArg::Review => Act::Review,
            ActArg::Promote => Act::Promote,
            ActArg::Revert => Act::Revert,
        }
    }
}

/// Prints a token for the exact bytes of the document.
pub fn approve(a: ApproveArgs) -> i32 {
    match token(&a) {
        Ok(t) => {
            println!("{t}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("sluice approve: {e}");
            EXIT_INVALID
        }
    }
}

fn token(a: &ApproveArgs) -> Result<String, String> {
    let act = Act::from(a.act);
    if act == Act::Promote && a.rollout.is_none() {
        return Err("a promote token needs --rollout NAME --step N".into());
    }
    if act != Act::Promote && a.rollout.is_some() {
        return Err("--rollout and --step are for promote tokens only".into());
    }
    let ttl = Dur::parse(&a.ttl).map_err(|e| format!("--ttl {}: {e}", a.ttl))?;
    if ttl.0.as_secs() == 0 {
        return Err("--ttl must be at least 1s".into());
    }
    let key = keys::load_signing_key(&a.key).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&a.traffic).map_err(|e| format!("{}: {e}", a.traffic.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| format!("{}: not UTF-8: {e}", a.traffic.display()))?;
    // The document must be valid: a token for something sluice would refuse helps nobody.
    let parsed = TrafficDoc::parse(text, &CheckContext::default())
        .map_err(|e| format!("{}: invalid document:\n{e}", a.traffic.display()))?;
    let now = crate::clock::unix_secs(std::time::SystemTime::now());
    let mut claims = Claims::new(
        &a.principal,
        &a.env,
        &bytes,
        parsed.doc.version,
        act,
        now,
        ttl.0.as_secs(),
    );
    if let (Some(r), Some(s)) = (&a.rollout, a.step) {
        claims = claims.with_target(r, s);
    }
    if a.full {
        claims = claims.with_full();
    }
    Ok(sign(&claims, &key))
}
