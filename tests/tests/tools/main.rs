//! End-to-end tests with the tools users watch Tern with: a real Prometheus
//! scraping it and headless Chromium driving the dashboard.

mod dashboard;
mod metrics;
