//! The portal API (`/api/v1`) against the sandbox EHR.

mod appointments;
mod fuzz;
mod bills;
mod home;
mod medications;
mod messages;
mod openapi;
mod records;
mod referrals;
