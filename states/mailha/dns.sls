{#- Nothing rendered for role dns yet; its tier adds states here. #}
