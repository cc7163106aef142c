//! Turning a caught panic's payload into the message it was raised with.

use std::any::Any;

/// The message a panic was raised with: `panic!("...")` carries a `&str`, a formatted
/// `panic!("{x}")` a `String`; anything else (`std::panic::panic_any`) has no text.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_of_each_kind_of_payload() {
        let literal: Box<dyn Any + Send> = Box::new("out of memory");
        let formatted: Box<dyn Any + Send> = Box::new(format!("batch {} failed", 7));
        let other: Box<dyn Any + Send> = Box::new(42_u32);
        assert_eq!(panic_message(literal.as_ref()), "out of memory");
        assert_eq!(panic_message(formatted.as_ref()), "batch 7 failed");
        assert_eq!(panic_message(other.as_ref()), "non-string panic payload");

        let caught = std::panic::catch_unwind(|| panic!("fold {} diverged", 3)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "fold 3 diverged");
    }
}
