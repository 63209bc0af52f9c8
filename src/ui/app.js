// placeholder: replaced by the bundled chat UI
