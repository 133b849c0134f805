//! A component of another world: weir must reject it at load with a clear error.

wit_bindgen::generate!({ path: "wit", world: "filter" });

struct Filter;

impl Guest for Filter {
    fn process_element(value: Vec<u8>) -> bool {
        !value.is_empty()
    }
}

export!(Filter);
