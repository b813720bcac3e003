package bench

// Test-only access to unexported helpers.
var MetricLabels = metricLabels
