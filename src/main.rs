//! `cubby`: the Cubby client. The mount daemon and the file commands arrive with the
//! chunked-upload and mount work; for now this prints the protocol it speaks.

use clap::Parser;

/// Cubby: a self-hosted, Dropbox-like file store you mount as a folder.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!(
        "cubby {}: chunking FastCDC {}/{}/{} bytes, BLAKE3",
        env!("CARGO_PKG_VERSION"),
        cubby_proto::chunking::MIN_CHUNK,
        cubby_proto::chunking::AVG_CHUNK,
        cubby_proto::chunking::MAX_CHUNK
    );
}
