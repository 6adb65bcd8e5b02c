// Automatically generated mod.rs
pub mod amazonaws;
