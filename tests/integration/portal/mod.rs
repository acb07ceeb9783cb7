//! The portal API (`/api/v1`) against the sandbox EHR.

mod appointments;
mod bills;
mod fuzz;
mod home;
mod medications;
mod messages;
mod openapi;
mod records;
mod referrals;
