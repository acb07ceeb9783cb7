//! Portal API: referrals.
