// Automatically generated mod.rs
pub mod iot;
