-- ARGV: P. Returns the flat run counters: field, count, ... (see counters()).
return counters()
