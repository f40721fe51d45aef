//! # sluice-sdk: write Sluice transforms in Rust
//!
//! A Sluice transform is a WebAssembly component that turns each input
//! record into zero, one or many output records, or into a per-record error
//! that the gateway sends to dead-letter. This crate is the only dependency
//! a transform author needs: it hides the WIT bindings and gives you a trait,
//! a macro, JSON helpers and a native test harness.
//!
//! ```
//! use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};
//!
//! /// Tags every JSON object with a fixed `team` field.
//! pub struct Tag {
//!     team: String,
//! }
//!
//! impl Transform for Tag {
//!     fn new(config: Config) -> Result<Self, ConfigError> {
//!         config.deny_unknown(&["team"])?;
//!         Ok(Tag { team: config.require("team")?.to_string() })
//!     }
//!
//!     fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
//!         let mut doc = record.json_object()?;
//!         doc.insert("team".into(), self.team.clone().into());
//!         out.emit_json(&doc.into());
//!         Ok(())
//!     }
//! }
//!
//! // In the transform crate: sluice_sdk::export!(Tag);
//!
//! // Natively, without WASM:
//! let mut h = sluice_sdk::testing::Harness::<Tag>::new(&[("team", "blue")]).unwrap();
//! assert_eq!(h.run_line(r#"{"a":1}"#).unwrap(), vec![r#"{"a":1,"team":"blue"}"#]);
//! ```
//!
//! Build the crate with `crate-type = ["cdylib", "rlib"]` and
//! `cargo build --target wasm32-wasip2`: the `.wasm` it produces is the
//! component. The `rlib` lets `cargo test` run your logic natively.

#![deny(missing_docs)]

extern crate self as sluice_sdk;

#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
pub mod alloc;
pub mod dom;
pub mod json;
pub mod log;
pub mod testing;
pub mod time;

mod batch;
mod config;
mod record;

pub use config::{Config, ConfigError};
pub use record::{Emit, ErrorKind, Output, Record, RecordError};
pub use serde_json;

/// The size-class allocator (see [`alloc`]) for a component; a transform
/// that brings its own turns off the default `fast-alloc` feature.
#[cfg(all(
    feature = "fast-alloc",
    target_arch = "wasm32",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

/// The outcome of one input record: its outputs, or its error.
pub type RecordResult = Result<Vec<Output>, RecordError>;

/// A transform: built once per instance from its configuration, then called
/// once per record.
///
/// The gateway creates one instance per worker and reuses it across many
/// batches, so parse the configuration in [`Transform::new`], not per record.
/// A panic in [`Transform::process`] traps the component: the whole batch
/// fails and the instance is thrown away. Return a [`RecordError`] instead
/// for anything a bad input can cause.
pub trait Transform: Sized + 'static {
    /// Builds an instance from its configuration (string keys and values).
    ///
    /// # Errors
    ///
    /// Return a [`ConfigError`] for an unknown key or a bad value; the
    /// pipeline then refuses to start, naming the key.
    fn new(config: Config) -> Result<Self, ConfigError>;

    /// Processes one record, emitting zero or more outputs into `out`.
    ///
    /// # Errors
    ///
    /// Return a [`RecordError`] when this record cannot be transformed. Any
    /// outputs already emitted for it are discarded.
    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError>;
}

/// Runs `transform` over a batch with the exact semantics the component
/// uses: one result per record, in order; a record's outputs are discarded
/// when it errors. The native [`testing`] harness calls this; inside a
/// component the same loop runs over the contract's packed batch (the SDK's
/// tests hold the two to the same answers).
pub fn process_batch<T: Transform>(transform: &mut T, batch: Vec<Record>) -> Vec<RecordResult> {
    let sizing = batch::Sizing::default();
    batch
        .into_iter()
        .map(|record| {
            let input = record.data.len();
            let mut out = Emit {
                data: Vec::with_capacity(sizing.hint(input)),
                ..Emit::default()
            };
            let result = transform.process(record, &mut out);
            sizing.note(input, out.data.len());
            result.map(|()| out.into_outputs())
        })
        .collect()
}

/// The generated WIT bindings. Not part of the public API: they change with
/// wit-bindgen; use the types re-exported at the crate root.
#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs, reason = "generated code")]
    #![allow(unused_qualifications, reason = "generated code")]
    #![allow(unsafe_code, reason = "generated canonical-ABI glue")]

    wit_bindgen::generate!({
        path: "wit",
        world: "transform-world",
        pub_export_macro: true,
        export_macro_name: "__export_transform_world",
        default_bindings_module: "sluice_sdk::bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
    });
}

/// Items the [`export!`] macro expands to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::bindings::exports::sluice::transform::transformer as wit;
    use crate::bindings::sluice::transform::types as wit_types;
    use std::cell::RefCell;

    pub use crate::bindings::exports::sluice::transform::transformer::Guest;

    /// Adapts a [`crate::Transform`] to the generated resource trait. The
    /// resource's methods take `&self` (a component instance is single
    /// threaded), so the transform sits in a `RefCell`.
    pub struct Adapter<T> {
        transform: RefCell<T>,
        sizing: crate::batch::Sizing,
    }

    impl<T: crate::Transform> wit::GuestTransform for Adapter<T> {
        fn create(config: wit_types::Config) -> Result<wit::Transform, wit_types::ConfigError> {
            match T::new(crate::Config::new(config)) {
                Ok(t) => Ok(wit::Transform::new(Adapter {
                    transform: RefCell::new(t),
                    sizing: crate::batch::Sizing::default(),
                })),
                Err(e) => Err(wit_types::ConfigError {
                    key: e.key,
                    message: e.message,
                }),
            }
        }

        fn process(&self, batch: wit_types::InputBatch) -> wit_types::OutputBatch {
            let input = batch.data.len();
            let hint = self.sizing.hint(input);
            let answer = crate::batch::run(&mut *self.transform.borrow_mut(), batch, hint);
            self.sizing.note(input, answer.data.len());
            answer
        }
    }
}

/// Exports a [`Transform`] implementation as the component's
/// `sluice:transform/transformer` interface. Call it once, at the root of
/// the transform crate.
///
/// ```ignore
/// sluice_sdk::export!(MyTransform);
/// ```
#[macro_export]
macro_rules! export {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __SluiceComponent;

        impl $crate::__private::Guest for __SluiceComponent {
            type Transform = $crate::__private::Adapter<$t>;
        }

        // Only a wasm build exports the canonical-ABI symbols: their names
        // (`sluice:transform/transformer@0.3.0#…`) are not valid symbols in
        // a native shared library, and natively the rlib is what tests use.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_transform_world!(
            __SluiceComponent with_types_in $crate::bindings
        );
    };
}
