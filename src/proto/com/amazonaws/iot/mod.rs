// Automatically generated mod.rs
pub mod securedtunneling;
