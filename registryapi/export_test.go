package registryapi

// MaxTagsPage is the largest page of tags the server asks a backend for, for the external tests.
const MaxTagsPage = maxTagsPage
