//! A broken plugin: a `scalar-plugin` component that also imports
//! `test:extra/vault`, which the host does not provide. The load must fail.

wit_bindgen::generate!({ path: ["../../../wit", "wit"], world: "test:extra/extra", generate_all });

use cutover::plugin::types::{Column, Signature};
use exports::cutover::plugin::scalar::Guest;

struct Extra;

impl Guest for Extra {
    fn functions() -> Vec<Signature> {
        vec![Signature {
            name: "secret_length".into(),
            params: vec![cutover::plugin::types::DataType::Int64],
            returns: cutover::plugin::types::DataType::Int64,
            deterministic: true,
        }]
    }

    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn call(_name: String, _args: Vec<Column>, rows: u32) -> Result<Column, String> {
        let n = test::extra::vault::secret("key").len() as i64;
        Ok(Column::Int64(cutover::plugin::types::Int64Column { values: vec![n; rows as usize], validity: None }))
    }
}

export!(Extra);
