package e2e

// nonEmpty is true for a non-empty string: a missing key or another type
// is not "set", so an assertion on it cannot pass by accident.
func nonEmpty(v any) bool {
	s, ok := v.(string)
	return ok && s != ""
}
