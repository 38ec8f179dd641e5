/** The version effect-lb reports: `--version`, and the admin API's status. */
export const version = "0.1.0"
