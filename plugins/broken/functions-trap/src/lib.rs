//! A broken plugin: `functions` panics (a trap). The load must fail.

use cutover_guest::{export_plugin, Column, Plugin, Signature};

struct Broken;

impl Plugin for Broken {
    fn functions() -> Vec<Signature> {
        panic!("functions() was told to trap")
    }

    fn call(_name: &str, mut args: Vec<Column>, _rows: usize) -> Result<Column, String> {
        args.pop().ok_or_else(|| "expected 1 argument".into())
    }
}

export_plugin!(Broken);
