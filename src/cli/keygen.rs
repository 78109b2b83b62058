//! `sluice keygen --principal NAME --out DIR`: a new Ed25519 key for a principal.

use std::path::PathBuf;

use clap::Args;

use super::{EXIT_INVALID, EXIT_OK};
use crate::change::keys;

/// `sluice keygen` arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The principal the key belongs to (names the files).
    #[arg(long)]
    pub principal: String,
    /// Folder for `<principal>.pem` (PKCS#8, mode 0600) and `<principal>.pub`.
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the key files and prints the `ed25519:` line for `trust.principals.<name>.keys`.
pub fn keygen(a: KeygenArgs) -> i32 {
    match keys::keygen(&a.principal, &a.out) {
        Ok(k) => {
            println!("{}", k.public_line);
            eprintln!(
                "wrote {} (private, mode 0600) and {}; kid {}. Add the line above to trust.principals.{}.keys.",
                k.private_key.display(),
                k.public_key.display(),
                k.kid,
                a.principal
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("sluice keygen: {e}");
            EXIT_INVALID
        }
    }
}
