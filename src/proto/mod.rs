// Automatically generated mod.rs
pub mod com;
