//! Compiles the `.proto` schema with `protox` (a pure-Rust protobuf compiler), so a
//! fresh machine needs no system `protoc`.

fn main() {
    let files = ["sightflow/v1/events.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = match protox::compile(files, ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("invalid .proto schema: {e}"),
    };
    let mut config = prost_build::Config::new();
    config.btree_map(["."]);
    if let Err(e) = config.compile_fds(fds) {
        panic!("cannot generate prost types: {e}");
    }
}
