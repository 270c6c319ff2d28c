//! A broken plugin: `functions` returns a name containing `.`. The load must fail.

use cutover_guest::{export_plugin, signature, Column, DataType::Int64, Plugin, Signature};

struct Broken;

impl Plugin for Broken {
    fn functions() -> Vec<Signature> {
        vec![signature("a.b", &[Int64], Int64)]
    }

    fn call(_name: &str, mut args: Vec<Column>, _rows: usize) -> Result<Column, String> {
        args.pop().ok_or_else(|| "expected 1 argument".into())
    }
}

export_plugin!(Broken);
