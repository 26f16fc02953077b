//! Embeds the browser SDK (`sdk/dist/sdk.js`, built by `make sdk`) into the binary, so
//! `serve` hands it out at `/sdk.js`. Without a built SDK the binary embeds nothing and
//! `/sdk.js` answers 404 saying how to build it.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let sdk = PathBuf::from("sdk/dist/sdk.js");
    println!("cargo::rerun-if-changed={}", sdk.display());
    let body = std::fs::read(&sdk).unwrap_or_default();
    std::fs::write(out.join("sdk.js"), body).expect("writing to OUT_DIR");
}
