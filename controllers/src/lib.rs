//! Ferrite controllers.
