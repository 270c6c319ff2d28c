//! A broken plugin: a component of another world (it exports
//! `test:other/greeter`, not `cutover:plugin/scalar`). The load must fail.

wit_bindgen::generate!({ path: "wit", world: "other" });

struct Other;

impl exports::test::other::greeter::Guest for Other {
    fn hello(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Other);
