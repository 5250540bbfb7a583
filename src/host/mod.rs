//! What the machine under us can do: which accelerator runs guests here.

pub mod accel;
