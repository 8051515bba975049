pub use cubby_testkit::*;
