//! libvirt JSON (being written)
