# The Noto font each test language is rendered in (sourced by tests/data/make-fixtures.sh,
# the tests that render lines of their own and the benchmarks that render pages).
font_of() {
    case $1 in
    eng) echo "Noto Serif 12" ;;
    san | hin) echo "Noto Serif Devanagari 12" ;;
    tam) echo "Noto Serif Tamil 12" ;;
    esac
}
