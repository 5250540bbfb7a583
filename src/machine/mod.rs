//! Machines: plan, apply, observe.
